"""A histoflow project folder: the environment its commands run in, and its Prefect flows.

A project is the folder holding ``dvc.yaml``, ``params.yaml`` and ``flows/``. Every entry
point (the CLI, DVC's stage commands, deployments, tests and benchmarks) takes its environment
defaults and loads flows from here, so there is one definition of each.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

__all__ = ["DEFAULTS", "apply_environment", "environment", "load_flow"]

# Offline-friendly defaults; a value the user set wins. No telemetry (this may be offline),
# quiet tokenizers in forked workers, MLflow without its INFO notices (database migrations,
# input-example validation) and download bars, time for a Prefect server to start on a busy 2-core
# machine (Prefect's own default, 20 s, is too short there), and concurrency leases kept on
# disk in PREFECT_HOME, so that a slot held by a killed run expires even after the server that
# granted it has gone (histoflow.orchestration).
DEFAULTS: Mapping[str, str] = {
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem",
}


def environment(root: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with histoflow's defaults filled in.

    Prefect state is kept in the project (``root/.prefect``, shown by ``make ui``) unless
    ``PREFECT_HOME`` is set.
    """
    env = dict(os.environ if base is None else base)
    env.setdefault("PREFECT_HOME", str(Path(root).resolve() / ".prefect"))
    for key, value in DEFAULTS.items():
        env.setdefault(key, value)
    return env


def apply_environment(root: Path) -> None:
    """Fill in this process's environment with :func:`environment`'s defaults."""
    for key, value in environment(root).items():
        os.environ.setdefault(key, value)


def load_flow(name: str, root: Path | None = None) -> ModuleType:
    """Import ``flows/NAME.py`` of the project at ``root`` (default: the working directory).

    The module is registered in ``sys.modules`` (as ``histoflow_flows_NAME``): Prefect finds a
    flow's file, its deployment entrypoint, through the flow's module.

    Raises:
        FileNotFoundError: the project has no such flow file.
    """
    path = Path(root or Path.cwd()).resolve() / "flows" / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run histoflow from the project root (where dvc.yaml is)"
        )
    key = f"histoflow_flows_{name}"
    loaded = sys.modules.get(key)
    if loaded is not None and Path(loaded.__file__).resolve() == path:
        return loaded
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
    return module
