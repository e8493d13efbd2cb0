"""Deployments of the histoflow flows: nightly retraining and batch monitoring of the inbox.

Schedules and parameters come from ``params.yaml`` (``deploy``). One machine (the usual way to
run histoflow unattended)::

    histoflow server &      # a Prefect server on 127.0.0.1:4200 (SQLite under .prefect/)
    histoflow serve         # or: python flows/deployments.py [PROJECT_ROOT]

serves both deployments from this process until it is stopped: ``histoflow-training/nightly``
(``deploy.training_cron``) and ``histoflow-monitor-inbox/inbox`` (every
``deploy.inbox_interval_minutes``). Several machines: the same deployments from ``prefect.yaml``
on a work pool, with a worker on each machine that holds a checkout (see the README).
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron, Interval

from histoflow.config import load_params
from histoflow.project import load_flow

__all__ = ["build_deployments"]

ROOT = Path(__file__).resolve().parent.parent  # the checkout these flow files belong to


def build_deployments(root: Path, params_file: str = "params.yaml") -> list[RunnerDeployment]:
    """The nightly training and the inbox-monitoring deployments for the project at ``root``.

    Args:
        root: Project folder (holds dvc.yaml, params.yaml and monitoring/inbox).
        params_file: Params file inside ``root``; its ``deploy`` section sets the schedules.

    Returns:
        ``[histoflow-training/nightly, histoflow-monitor-inbox/inbox]``, ready for ``serve``.
    """
    root = Path(root).resolve()
    cfg = load_params(root / params_file).deploy
    parameters = {"root": str(root)}
    training = load_flow("training", ROOT).training
    monitor_inbox = load_flow("monitoring", ROOT).monitor_inbox
    return [
        training.to_deployment(
            name="nightly",
            schedule=Cron(cfg.training_cron, timezone=cfg.timezone),
            parameters=parameters,
            tags=["histoflow", "training"],
            # A late nightly run waits for the one in progress instead of overlapping it.
            concurrency_limit=ConcurrencyLimitConfig(
                limit=cfg.training_concurrency, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
            ),
            description="Re-run the DVC pipeline (stale stages only), register, promote by rule.",
        ),
        monitor_inbox.to_deployment(
            name="inbox",
            schedule=Interval(timedelta(minutes=cfg.inbox_interval_minutes)),
            parameters={**parameters, "params_file": params_file},
            tags=["histoflow", "monitoring"],
            concurrency_limit=1,
            description="Drift reports for new batches in monitor.inbox, then monitor.action.",
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    """Serve the deployments of the project at ``argv[0]`` (default: this checkout)."""
    argv = sys.argv[1:] if argv is None else argv
    serve(*build_deployments(Path(argv[0]) if argv else ROOT, *argv[1:2]))


if __name__ == "__main__":
    main()
