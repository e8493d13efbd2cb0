"""Deployments of the histoflow flows: nightly training and a 15-minute inbox sweep.

One machine (the usual way to run histoflow unattended)::

    python flows/deployments.py [PROJECT_ROOT]

serves both deployments from this process until it is stopped: ``histoflow-training/nightly``
(02:00 every night) and ``histoflow-monitor-inbox/inbox`` (every 15 minutes). Point
``PREFECT_API_URL`` at a running server (``prefect server start``) so the schedules, runs and
``monitor.action: retrain`` all use the same one.

Several machines: register the same two deployments from ``prefect.yaml`` on a work pool, and
start a worker on each machine that holds a checkout::

    prefect work-pool create histoflow --type process
    prefect deploy --all
    HISTOFLOW_ROOT=/path/to/checkout prefect worker start --pool histoflow
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import timedelta
from pathlib import Path
from types import ModuleType

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

__all__ = ["build_deployments"]

FLOWS = Path(__file__).resolve().parent
ROOT = FLOWS.parent


def build_deployments(root: Path) -> list[RunnerDeployment]:
    """The nightly training and the inbox-sweep deployments for the project at ``root``.

    Args:
        root: Project folder (holds dvc.yaml, params.yaml and monitoring/inbox).

    Returns:
        ``[histoflow-training/nightly, histoflow-monitor-inbox/inbox]``, ready for ``serve``.
    """
    parameters = {"root": str(Path(root).resolve())}
    training = _flow_module("training").training
    monitor_inbox = _flow_module("monitoring").monitor_inbox
    return [
        training.to_deployment(
            name="nightly", cron="0 2 * * *", parameters=parameters, tags=["histoflow"]
        ),
        monitor_inbox.to_deployment(
            name="inbox", interval=timedelta(minutes=15), parameters=parameters, tags=["histoflow"]
        ),
    ]


def _flow_module(name: str) -> ModuleType:
    # flows/ is not a package; the module is registered in sys.modules because to_deployment
    # finds a flow's file (its entrypoint) through the flow's module.
    key = f"histoflow_flows_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, FLOWS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[key]
            raise
    return sys.modules[key]


if __name__ == "__main__":
    serve(*build_deployments(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT))
