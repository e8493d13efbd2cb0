"""Logging runs and registering models in MLflow, with retries; loading a registered model.

Tracking set-up and retries are in :mod:`histoflow.registry.tracking`; promotion (the rules,
the champion lock, rollback) in :mod:`histoflow.registry.promotion`.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from histoflow.config import Params
from histoflow.registry._provenance import environment_tags, frozen_requirements, machine_tags
from histoflow.registry.pyfunc import MODEL_CODE, encode_image_file, model_signature
from histoflow.registry.tracking import (
    configure_tracking,
    flatten_params,
    tracking_uri,
    use_tracking_uri,
    with_retries,
)

if TYPE_CHECKING:
    from histoflow.inference import Predictor

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "REGISTRATION",
    "RegisteredModel",
    "load_model",
    "load_pyfunc",
    "log_and_register",
    "log_monitoring",
    "registered_version_with",
]

CHAMPION, CHALLENGER = "champion", "challenger"
# A version carries REGISTRATION=incomplete from its creation until its tags and alias are set:
# a version left behind by a crash is never promotable.
REGISTRATION = "registration"


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
        mlflow.log_params(flatten_params(params.model_dump(mode="json", by_alias=True)))
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
        metrics = {"n_current": summary["n_current"]}
        if summary["drift_detected"] is not None:  # None: too few images to judge
            metrics["drift_detected"] = float(summary["drift_detected"])
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
                "verdict": str(summary.get("verdict", "judged")),
            }
        )
        for name in ("drift.json", "drift.html"):
            if (out_dir / name).is_file():
                mlflow.log_artifact(str(out_dir / name))
    return run.info.run_id


@dataclass(frozen=True)
class RegisteredModel:
    """A registered model, loaded: its inference path and its monitoring reference.

    Attributes:
        uri: what was loaded, e.g. ``models:/histoflow@champion``.
        predictor: the one inference entry (:class:`histoflow.inference.Predictor`) that the
            pyfunc, ``histoflow predict`` and monitoring all use.
        reference: the monitoring reference folder registered with it (None for models
            registered before references existed).
        reference_predictions: its test-split predictions, the prediction reference.
    """

    uri: str
    predictor: Predictor
    reference: Path | None
    reference_predictions: Path | None


def load_model(uri: str, root: Path) -> RegisteredModel:
    """Load a registered model; a clear error when it does not exist.

    Raises:
        FileNotFoundError: no such model in the project's tracking store.
    """
    model = load_pyfunc(uri, root).unwrap_python_model()
    return RegisteredModel(
        uri=uri,
        predictor=model.predictor,
        reference=model.reference.get("reference"),
        reference_predictions=model.reference.get("reference_predictions"),
    )


def load_pyfunc(uri: str, root: Path) -> mlflow.pyfunc.PyFuncModel:
    """The MLflow pyfunc of a registered model, from the project's tracking store.

    Raises:
        FileNotFoundError: no such model in the project's tracking store.
    """
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
