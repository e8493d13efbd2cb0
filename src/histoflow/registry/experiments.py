"""MLflow runs for ``dvc exp run`` experiments, so every point of a sweep is recorded.

``dvc exp run`` sets ``DVC_EXP_NAME`` for the stage commands it runs. When the ``evaluate``
stage finishes inside one, the CLI calls :func:`log_experiment`, which logs the experiment's
full params and test metrics as one run (tagged with the experiment name and baseline commit)
in the project's tracking store. Registration stays with the training flow: a sweep point is
evidence, not a candidate model.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow

from histoflow.config import Params
from histoflow.registry.mlflow_registry import configure_tracking, git_commit

__all__ = ["experiment_name", "log_experiment", "project_root"]


def experiment_name() -> str | None:
    """The running DVC experiment's name, or None outside ``dvc exp run``."""
    return os.environ.get("DVC_EXP_NAME") or None


def project_root(cwd: Path | None = None) -> Path:
    """The user's project folder, also when DVC runs a queued experiment in a temporary copy.

    Queued and ``--temp`` experiments run in ``<project>/.dvc/tmp/exps/<tmp>``; their MLflow
    runs belong in the project's own store, not in the copy that DVC deletes afterwards.
    """
    cwd = Path(cwd or Path.cwd()).resolve()
    parts = cwd.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return cwd


def log_experiment(cfg: Params, metrics: dict, name: str, root: Path | None = None) -> str:
    """Log one DVC experiment (params and headline metrics) as an MLflow run; returns its id."""
    root = project_root(root)
    experiment_id = configure_tracking(root, cfg.registry.experiment)
    params = _flatten(cfg.model_dump(mode="json", by_alias=True))
    scalars = {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    for cls, recall in (metrics.get("per_class_recall") or {}).items():
        scalars[f"recall.{cls}"] = float(recall)
    for metric, bounds in (metrics.get("ci") or {}).items():
        scalars[f"{metric}.ci_low"], scalars[f"{metric}.ci_high"] = map(float, bounds)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"dvc-exp-{name}") as run:
        # MLflow caps a batch at 100 params; log in chunks.
        items = sorted(params.items())
        for start in range(0, len(items), 100):
            mlflow.log_params(dict(items[start : start + 100]))
        mlflow.log_metrics(scalars)
        mlflow.set_tags(
            {
                "histoflow.kind": "dvc-experiment",
                "dvc.exp_name": name,
                "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
                "git.commit": git_commit(root),
            }
        )
        return run.info.run_id


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat
