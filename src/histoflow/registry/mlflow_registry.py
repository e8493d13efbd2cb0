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
    encoder_dir: Path,
    fusion_dir: Path,
    example_image: Path,
    artifacts: list[Path],
    tags: dict[str, str],
) -> str:
    """Log one training run with its model, register it, and tag it ``challenger``.

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
        model.load_context(_Context({"encoder": str(encoder_dir), "fusion": str(fusion_dir)}))
        signature = infer_signature(example, model.predict(None, example))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=HistoflowModel(),
            artifacts={"encoder": str(encoder_dir), "fusion": str(fusion_dir)},
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
