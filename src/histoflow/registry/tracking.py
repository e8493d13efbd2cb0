"""Where MLflow records go, and talking to it reliably: the tracking URI, retries, flat records.

Part of the one adapter to MLflow (:mod:`histoflow.registry`).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import mlflow
from mlflow.exceptions import MlflowException

from histoflow.config import RegistryConfig

__all__ = [
    "RegistryUnavailable",
    "configure_tracking",
    "evaluation_metrics",
    "flatten_params",
    "git_commit",
    "is_transient",
    "tracking_uri",
    "use_tracking_uri",
    "with_retries",
]

T = TypeVar("T")

# What a pipeline run writes into git-tracked files (git pathspecs): not a change of its inputs.
_WRITTEN = (":(exclude)dvc.lock", ":(exclude)metrics")


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


def evaluation_metrics(evaluation: dict) -> dict[str, float]:
    """The MLflow metrics of an evaluation (``metrics/evaluate.json``'s content).

    Its numbers as they are, each class's recall as ``recall.<class>``, each CI as
    ``<metric>.ci_low`` / ``<metric>.ci_high`` and, with ``evaluate.seeds``, each spread as
    ``<metric>.seed_mean`` / ``<metric>.seed_std`` and, with ``evaluate.probes``, each probe's
    ``probe.<probe>.macro_recall`` (mean over seeds) and ``..._std``: what promotion and
    ``registry status`` read.
    """
    metrics = {
        k: float(v)
        for k, v in evaluation.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    for cls, recall in (evaluation.get("per_class_recall") or {}).items():
        metrics[f"recall.{cls}"] = float(recall)
    for name, bounds in (evaluation.get("ci") or {}).items():  # {metric: [low, high]}
        if isinstance(bounds, list | tuple) and len(bounds) == 2 and None not in bounds:
            metrics[f"{name}.ci_low"], metrics[f"{name}.ci_high"] = map(float, bounds)
    for name, spread in (evaluation.get("seed_spread") or {}).items():  # {metric: {mean, std}}
        if isinstance(spread, dict):
            metrics[f"{name}.seed_mean"] = float(spread["mean"])
            metrics[f"{name}.seed_std"] = float(spread["std"])
    for probe, result in ((evaluation.get("probes") or {}).get("results") or {}).items():
        metrics[f"probe.{probe}.macro_recall"] = float(result["macro_recall"])
        metrics[f"probe.{probe}.macro_recall_std"] = float(result["macro_recall_std"])
    metrics.update(_trust_metrics(evaluation))
    return metrics


def _trust_metrics(evaluation: dict) -> dict[str, float]:
    """Calibration before/after and conformal coverage (#14): ``coverage.<class>`` for promotion."""
    out = {}
    cal = evaluation.get("calibration") or {}
    for when in ("before", "after"):
        for k in ("ece", "brier", "nll"):
            if cal.get(when, {}).get(k) is not None:
                out[f"calibration.{k}_{when}"] = float(cal[when][k])
    if "temperature" in cal:
        out["calibration.temperature"] = float(cal["temperature"])
    conformal = evaluation.get("conformal") or {}
    for k in ("alpha", "coverage", "mean_set_size", "singleton_share", "empty_share"):
        if conformal.get(k) is not None:
            out[f"conformal.{k}"] = float(conformal[k])
    for cls, c in (conformal.get("per_class") or {}).items():
        if c.get("coverage") is not None:
            out[f"coverage.{cls}"] = float(c["coverage"])
    return out


def flatten_params(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested params as flat ``section.key`` strings (MLflow params are flat)."""
    flat: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def git_commit(root: Path) -> str:
    """The current commit of ``root``, with ``-dirty`` when tracked inputs have changed.

    ``dvc.lock`` and ``metrics/`` are the pipeline's own git-tracked outputs: a run rewrites
    them, so their changes say nothing about the code, params and data pointers it ran from.
    """
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *_WRITTEN],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"
    return head + ("-dirty" if dirty else "")
