"""The one adapter to MLflow: tracking set-up, run logging and registration with retries.

Promotion (the rules, the champion lock, rollback) is in :mod:`histoflow.registry.promotion`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from histoflow.config import Params, RegistryConfig
from histoflow.registry._provenance import environment_tags, frozen_requirements, machine_tags
from histoflow.registry.pyfunc import MODEL_CODE, encode_image_file, model_signature

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "RegistryUnavailable",
    "configure_tracking",
    "git_commit",
    "is_transient",
    "load_model",
    "log_and_register",
    "log_monitoring",
    "tracking_uri",
    "with_retries",
]

CHAMPION, CHALLENGER = "champion", "challenger"
# A version carries REGISTRATION=incomplete from its creation until its tags and alias are set:
# a version left behind by a crash is never promotable.
REGISTRATION = "registration"

T = TypeVar("T")


class RegistryUnavailable(RuntimeError):
    """The tracking server could not be reached after every retry."""


def tracking_uri(root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded default: SQLite under ``root/mlruns``."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{(Path(root) / 'mlruns' / 'mlflow.db').resolve()}"
    )


def use_tracking_uri(uri: str) -> None:
    """Point this process's MLflow client at ``uri``, leaving the environment as it was.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``. Left there, the first
    project's store would silently become every later project's in the same process (a Prefect
    worker serving several projects) and in every child process it starts; only a URI the user
    set belongs in the environment.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def configure_tracking(root: Path, experiment: str) -> str:
    """Point MLflow at the tracking store and make sure ``experiment`` exists; returns its id."""
    uri = tracking_uri(root)
    use_tracking_uri(uri)
    # histoflow retries whole operations itself (registry.retries); MLflow's own per-request
    # retries (7, exponential) would turn a dead server into minutes of silence per call.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    if uri.startswith("sqlite:"):
        (Path(root) / "mlruns").mkdir(parents=True, exist_ok=True)
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is not None:
        return existing.experiment_id
    # With the embedded store, artifacts live beside the database, not in the working directory.
    location = (
        (Path(root) / "mlruns" / "artifacts").resolve().as_uri()
        if uri.startswith("sqlite:")
        else None
    )
    return mlflow.create_experiment(experiment, artifact_location=location)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` looks like an unreachable or overloaded server (worth a retry)."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    text = str(exc)
    markers = ("Max retries exceeded", "Connection refused", "Connection aborted", "timed out")
    if isinstance(exc, MlflowException):
        code = getattr(exc, "error_code", "")
        return code in ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED") or any(
            m in text for m in markers
        )
    return type(exc).__module__.startswith(("requests", "urllib3")) or any(
        m in text for m in markers
    )


def with_retries(fn: Callable[[], T], cfg: RegistryConfig, what: str, uri: str) -> T:
    """Call ``fn``; retry transient failures ``cfg.retries`` times with exponential backoff.

    Raises:
        RegistryUnavailable: every attempt failed with a transient error.
    """
    delay, start = cfg.retry_backoff_s, time.monotonic()
    for attempt in range(cfg.retries + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            last = exc
            if attempt < cfg.retries:
                time.sleep(delay)
                delay *= 2
    raise RegistryUnavailable(
        f"{what}: MLflow at {uri} did not answer after {cfg.retries + 1} attempts over "
        f"{time.monotonic() - start:.0f} s ({str(last).splitlines()[0][:300]}). No usable version "
        "was registered (a version created before a failure is deleted, or stays tagged "
        "registration=incomplete and is never promoted); start the tracking server (or unset "
        "MLFLOW_TRACKING_URI) and run again."
    ) from last


def log_and_register(
    root: Path,
    params: Params,
    *,
    metrics: dict[str, float],
    model_files: dict[str, Path],
    classes: list[str],
    example_image: Path,
    artifacts: list[Path],
    tags: dict[str, str],
    model_card: str | None = None,
) -> str:
    """Log one training run with its model, register it, and tag it ``challenger``.

    Transient tracking-server failures are retried (``registry.retries``, exponential backoff
    from ``registry.retry_backoff_s``); a failed attempt deletes the version it created, so a
    version exists only once it is complete.

    Args:
        root: project folder.
        params: the run's parameters, logged flat.
        metrics: test metrics (with ``<metric>.ci_low`` / ``.ci_high`` where known), logged.
        model_files: the pyfunc's artifacts: ``encoder`` and ``fusion`` model folders, and
            optionally ``reference`` / ``reference_predictions`` for monitoring.
        classes: class names, in the model's output order (for the signature).
        example_image: an image file for the input example.
        artifacts: files and folders logged with the run.
        tags: run tags (git commit, dvc hashes).
        model_card: markdown, logged with the run and inside the model.

    Returns:
        The new model version.

    Raises:
        RegistryUnavailable: the tracking server could not be reached.
    """
    cfg = params.registry
    uri = tracking_uri(root)
    return with_retries(
        lambda: _log_and_register_once(
            root, params, metrics, model_files, classes, example_image, artifacts, tags, model_card
        ),
        cfg,
        f"registering {cfg.model_name}",
        uri,
    )


def _log_and_register_once(
    root, params, metrics, model_files, classes, example_image, artifacts, tags, model_card
) -> str:
    cfg = params.registry
    experiment_id = configure_tracking(root, cfg.experiment)
    client = MlflowClient()
    version = None
    run = mlflow.start_run(experiment_id=experiment_id)
    try:
        mlflow.log_params(_flatten(params.model_dump(mode="json", by_alias=True)))
        mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})  # NaN metrics are skipped
        mlflow.set_tags({**tags, **machine_tags(), **environment_tags()})
        mlflow.log_text(frozen_requirements(), "environment/requirements.txt")
        for path in artifacts:
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=path.name)
            elif path.is_file():
                mlflow.log_artifact(str(path))
        files = {name: str(path) for name, path in model_files.items()}
        with tempfile.TemporaryDirectory() as tmp:
            if model_card is not None:
                mlflow.log_text(model_card, "model_card.md")
                card = Path(tmp) / "model_card.md"
                card.write_text(model_card)
                files["model_card"] = str(card)
            example = pd.DataFrame({"image": [encode_image_file(example_image)]})
            # Signature from the class list, so the model runs once here: MLflow's check that
            # the input example is servable, which also loads the model from its code file.
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_CODE),
                artifacts=files,
                signature=model_signature(classes),
                input_example=example,
                pip_requirements=[_requirement()],
            )
        mv = mlflow.register_model(
            info.model_uri,
            cfg.model_name,
            tags={REGISTRATION: "incomplete", "run_id": run.info.run_id},
        )
        version = str(mv.version)
        client.set_registered_model_alias(cfg.model_name, CHALLENGER, version)
        client.set_model_version_tag(cfg.model_name, version, REGISTRATION, "complete")
    except BaseException:
        _undo(client, cfg.model_name, version)
        raise
    mlflow.end_run()
    return version


def registered_version_with(root: Path, params: Params, tags: dict[str, str]) -> str | None:
    """The newest complete version whose run recorded exactly these ``dvc.md5.*`` tags.

    Equal ``dvc.lock`` hashes (every stage's inputs and outputs) mean the same data, model and
    evaluation: registering again would only add a duplicate version. None when there is no
    such version, or the registry cannot be read (registration then reports the problem).
    """
    wanted = {k: v for k, v in tags.items() if k.startswith("dvc.md5.")}
    if not wanted:
        return None
    name = params.registry.model_name
    try:
        configure_tracking(root, params.registry.experiment)
        client = MlflowClient()
        versions = client.search_model_versions(f"name = '{name}'")
        for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
            if mv.tags.get(REGISTRATION, "complete") != "complete" or not mv.run_id:
                continue
            run_tags = client.get_run(mv.run_id).data.tags
            if {k: v for k, v in run_tags.items() if k.startswith("dvc.md5.")} == wanted:
                return str(mv.version)
    except (MlflowException, OSError):
        return None
    return None


def _undo(client: MlflowClient, name: str, version: str | None) -> None:
    """Best effort after a failed registration: no version left behind, the run marked FAILED.

    If the server is down this cannot reach it; the version then keeps ``registration:
    incomplete`` and promotion refuses it. ``end_run`` leaves no active run either way.
    """
    if version is not None:
        with contextlib.suppress(Exception):
            client.delete_model_version(name, version)
    with contextlib.suppress(Exception):
        mlflow.end_run("FAILED")


def log_monitoring(root: Path, experiment: str, summary: dict, out_dir: Path) -> str:
    """Log a batch's drift summary and report as a run of ``<experiment>-monitoring``.

    Returns:
        The run id.
    """
    experiment_id = configure_tracking(root, f"{experiment}-monitoring")
    with mlflow.start_run(experiment_id=experiment_id, run_name=str(summary.get("batch"))) as run:
        metrics = {
            "drift_detected": float(summary["drift_detected"]),
            "n_current": summary["n_current"],
        }
        for name, signal in summary.get("signals", {}).items():
            metrics[f"{name}.drifted"] = float(signal["drifted"])
            if isinstance(signal.get("share"), int | float):
                metrics[f"{name}.share"] = float(signal["share"])
        for key, value in (summary.get("performance") or {}).items():
            if isinstance(value, int | float):
                metrics[f"performance.{key}"] = float(value)
        mlflow.log_metrics(metrics)
        mlflow.set_tags(
            {
                "batch": str(summary.get("batch")),
                "model_uri": str(summary.get("model_uri")),
                "action": str((summary.get("action") or {}).get("action")),
            }
        )
        for name in ("drift.json", "drift.html"):
            if (out_dir / name).is_file():
                mlflow.log_artifact(str(out_dir / name))
    return run.info.run_id


def load_model(uri: str, root: Path):
    """Load a registered pyfunc; a clear error when it does not exist."""
    use_tracking_uri(tracking_uri(root))
    try:
        return mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as exc:
        raise FileNotFoundError(
            f"model {uri!r} could not be loaded from {tracking_uri(root)}: {str(exc).splitlines()[0]}. "
            "Train and register one with `histoflow run`, or pass --model with an existing URI "
            "(e.g. models:/histoflow/1 or runs:/<run_id>/model)."
        ) from None


def _requirement() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"histoflow=={version('histoflow')}"
    except PackageNotFoundError:
        return "histoflow"


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def git_commit(root: Path) -> str:
    """The current commit of ``root``, with ``-dirty`` when the work tree has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"
    return head + ("-dirty" if dirty else "")
