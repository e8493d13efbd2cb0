"""The one adapter to MLflow: tracking set-up, run logging, registration and gated promotion."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from histoflow.config import Params, RegistryConfig
from histoflow.registry.pyfunc import HistoflowModel, encode_image_file

__all__ = [
    "Decision",
    "configure_tracking",
    "git_commit",
    "load_model",
    "log_and_register",
    "log_monitoring",
    "promote",
    "tracking_uri",
]

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class Decision:
    version: str
    promoted: bool
    reason: str
    metric: str
    challenger_value: float
    champion_value: float | None
    champion_version: str | None


def tracking_uri(root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded default: SQLite under ``root/mlruns``."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{(Path(root) / 'mlruns' / 'mlflow.db').resolve()}"
    )


def configure_tracking(root: Path, experiment: str) -> str:
    """Point MLflow at the tracking store and make sure ``experiment`` exists; returns its id."""
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
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


def log_and_register(
    root: Path,
    params: Params,
    *,
    metrics: dict[str, float],
    model_files: dict[str, Path],
    example_image: Path,
    artifacts: list[Path],
    tags: dict[str, str],
) -> str:
    """Log one training run with its model, register it, and tag it ``challenger``.

    Args:
        root: project folder.
        params: the run's parameters, logged flat.
        metrics: test metrics, logged.
        model_files: the pyfunc's artifacts: ``encoder`` and ``fusion`` model folders, and
            optionally ``reference`` / ``reference_predictions`` for monitoring.
        example_image: an image file for the signature's input example.
        artifacts: files and folders logged with the run.
        tags: run tags (git commit, dvc hashes).

    Returns:
        The new model version.
    """
    cfg = params.registry
    experiment_id = configure_tracking(root, cfg.experiment)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params(_flatten(params.model_dump(mode="json", by_alias=True)))
        mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})  # NaN metrics are skipped
        mlflow.set_tags({**tags, **_machine_tags()})
        for path in artifacts:
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=path.name)
            elif path.is_file():
                mlflow.log_artifact(str(path))
        example = pd.DataFrame({"image": [encode_image_file(example_image)]})
        model = HistoflowModel()
        files = {name: str(path) for name, path in model_files.items()}
        model.load_context(_Context(files))
        signature = infer_signature(example, model.predict(None, example))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=HistoflowModel(),
            artifacts=files,
            signature=signature,
            input_example=example,
            pip_requirements=["histoflow"],
            registered_model_name=cfg.model_name,
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    client.set_registered_model_alias(cfg.model_name, CHALLENGER, version)
    client.set_model_version_tag(cfg.model_name, version, "run_id", run.info.run_id)
    return version


def promote(cfg: RegistryConfig, version: str, root: Path) -> Decision:
    """Move ``champion`` to ``version`` only if it beats the champion's metric by the margin.

    The decision and its evidence are written as tags on the version.
    """
    mlflow.set_tracking_uri(tracking_uri(root))
    client = MlflowClient()
    challenger = _metric(client, cfg.model_name, version, cfg.metric)
    try:
        champ = client.get_model_version_by_alias(cfg.model_name, CHAMPION)
    except MlflowException:
        champ = None
    if champ is None:
        promoted, champ_value, reason = True, None, "no champion yet"
    else:
        champ_value = _metric(client, cfg.model_name, champ.version, cfg.metric)
        promoted = challenger > champ_value + cfg.min_improvement
        relation = "beats" if promoted else "does not beat"
        reason = (
            f"{cfg.metric} {challenger:.4f} {relation} champion v{champ.version} "
            f"{champ_value:.4f} + margin {cfg.min_improvement}"
        )
    if promoted:
        client.set_registered_model_alias(cfg.model_name, CHAMPION, version)
    for key, value in {
        "promotion.decision": "promoted" if promoted else "kept champion",
        "promotion.reason": reason,
        "promotion.metric": cfg.metric,
    }.items():
        client.set_model_version_tag(cfg.model_name, version, key, value)
    return Decision(
        version,
        promoted,
        reason,
        cfg.metric,
        challenger,
        champ_value,
        None if champ is None else champ.version,
    )


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
    mlflow.set_tracking_uri(tracking_uri(root))
    try:
        return mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as exc:
        raise FileNotFoundError(
            f"model {uri!r} could not be loaded from {tracking_uri(root)}: {str(exc).splitlines()[0]}. "
            "Train and register one with `histoflow run`, or pass --model with an existing URI "
            "(e.g. models:/histoflow/1 or runs:/<run_id>/model)."
        ) from None


class _Context:
    """The slice of mlflow's PythonModelContext that :class:`HistoflowModel` reads."""

    def __init__(self, artifacts: dict[str, str]):
        self.artifacts = artifacts


def _metric(client: MlflowClient, name: str, version: str, metric: str) -> float:
    run_id = client.get_model_version(name, version).run_id
    value = client.get_run(run_id).data.metrics.get(metric)
    if value is None:
        raise ValueError(
            f"model {name} v{version} (run {run_id}) has no metric {metric!r} to compare"
        )
    return float(value)


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def _machine_tags() -> dict[str, str]:
    import torch

    return {
        "machine.platform": platform.platform(),
        "machine.python": platform.python_version(),
        "machine.torch": torch.__version__,
        "machine.cuda": str(torch.cuda.is_available()),
        "machine.cpus": str(os.cpu_count()),
    }


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
