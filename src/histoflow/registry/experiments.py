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
import pandas as pd

from histoflow.config import Params
from histoflow.registry.tracking import (
    configure_tracking,
    evaluation_metrics,
    flatten_params,
    git_commit,
)

__all__ = ["experiment_name", "log_experiment", "log_leaderboard", "project_root"]


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
    params = flatten_params(cfg.model_dump(mode="json", by_alias=True))
    scalars = evaluation_metrics(metrics)
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


def log_leaderboard(root: Path, cfg: Params, table: pd.DataFrame) -> list[str]:
    """Log each (encoder, probe) row of an encoder leaderboard as a run; returns the run ids.

    The runs go to the experiment ``<registry.experiment>-encoders``, tagged
    ``histoflow.kind=encoder-probe``, with the probe's mean and std of each metric.
    """
    root = project_root(root)
    experiment_id = configure_tracking(root, f"{cfg.registry.experiment}-encoders")
    ids = []
    for row in table.to_dict("records"):
        name = f"{row['encoder']} / {row['probe']}"
        with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
            mlflow.log_params(
                {"encoder": row["encoder"], "probe": row["probe"], "n_seeds": row["n_seeds"]}
            )
            mlflow.log_metrics(
                {k: float(v) for k, v in row.items() if isinstance(v, float) and v == v}
            )
            mlflow.set_tags(
                {
                    "histoflow.kind": "encoder-probe",
                    "per_seed_macro_recall": row["per_seed_macro_recall"],
                    "git.commit": git_commit(root),
                }
            )
            ids.append(run.info.run_id)
    return ids
