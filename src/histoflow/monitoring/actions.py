"""What to do when a batch drifts (``monitor.action``): nothing, notify, or start a retrain.

The returned record is stored in ``drift.json`` under ``"action"``. An action that cannot be
taken (no notification block, no training deployment, server down) is recorded with
``taken: False`` and a detail saying how to fix it; it never fails the monitoring run, whose
drift report is already written.

Call ``take_action`` from synchronous code (a sync flow or task, or a script): Prefect's
``Block.load`` and ``run_deployment`` return coroutines in an async context.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings
from prefect.utilities.asyncutils import run_coro_as_sync

from histoflow.config import MonitorConfig

__all__ = ["take_action"]

_CONFIGURE_NOTIFY = (
    "create a Prefect notification block (e.g. `prefect block create slack-webhook`, or in the"
    " UI under Blocks) and set monitor.notify_block in params.yaml to its name or"
    " '<block-type-slug>/<name>'"
)


def take_action(summary: dict, cfg: MonitorConfig) -> dict:
    """Act on a batch's drift summary as ``cfg.action`` says.

    Args:
        summary: The drift summary of one batch: ``drift_detected``, and for the message
            ``batch``, ``report`` (path of the HTML report) and ``signals`` (name ->
            ``{"drifted": bool, ...}``).
        cfg: The ``monitor`` section of params.yaml.

    Returns:
        ``{"action", "taken", "detail"}``, plus ``flow_run_id`` when a retrain was started.
    """
    if cfg.action == "none":
        return _record("none", False, "monitor.action is none: the report is the only output")
    if not summary.get("drift_detected"):
        return _record(cfg.action, False, "no drift detected: nothing to do")
    if cfg.action == "notify":
        return _notify(summary, cfg.notify_block)
    return _retrain(summary, cfg.retrain_deployment)


def _notify(summary: dict, block_name: str | None) -> dict:
    if not block_name:
        return _record("notify", False, f"monitor.notify_block is not set: {_CONFIGURE_NOTIFY}")
    try:
        block = _load_notifier(block_name)
    except Exception as exc:  # never fail the monitoring run over a notification
        return _record(
            "notify",
            False,
            f"could not load notification block {block_name!r} ({exc}): {_CONFIGURE_NOTIFY}",
        )
    batch = summary.get("batch", "?")
    drifted = [name for name, signal in summary.get("signals", {}).items() if signal.get("drifted")]
    body = (
        f"histoflow detected drift in batch '{batch}': {', '.join(drifted) or 'see report'}"
        f" drifted. Report: {summary.get('report', 'no report path recorded')}."
    )
    try:
        _send(block, body, subject=f"histoflow: drift in batch {batch}")
    except Exception as exc:
        return _record("notify", False, f"notification block {block_name!r} failed: {exc!r}")
    return _record("notify", True, f"sent via {block_name!r}: {body}")


def _load_notifier(name: str) -> Any:
    # A bare name is looked up among the notification blocks; 'slug/name' is loaded as is.
    slug_name = name if "/" in name else f"{_notification_type(name)}/{name}"
    block = Block.load(slug_name)
    if not callable(getattr(block, "notify", None)):
        raise TypeError(f"{slug_name!r} is a {type(block).__name__}, not a notification block")
    return block


def _notification_type(name: str) -> str:
    # Paged: the client sends limit/offset as given, and the server rejects a null for either.
    documents, offset = [], 0
    with get_client(sync_client=True) as client:
        while page := client.read_block_documents(offset=offset, limit=100, include_secrets=False):
            documents += page
            offset += len(page)
    slugs = sorted(
        {
            d.block_type.slug
            for d in documents
            if d.name == name
            and d.block_type is not None
            and d.block_schema is not None
            and "notify" in d.block_schema.capabilities
        }
    )
    if len(slugs) != 1:
        found = f"several ({', '.join(slugs)}); name one as '<slug>/{name}'" if slugs else "none"
        raise ValueError(f"notification blocks named {name!r} on the Prefect server: {found}")
    return slugs[0]


def _send(block: Any, body: str, subject: str) -> None:
    # Prefect's own blocks only log a failed send unless raise_on_failure is active; custom
    # blocks may define notify as a coroutine function, awaited inside the same guard.
    guard = (
        block.raise_on_failure()
        if isinstance(block, NotificationBlock)
        else contextlib.nullcontext()
    )
    with guard:
        result = block.notify(body, subject=subject)
        if inspect.isawaitable(result):
            run_coro_as_sync(result)


def _retrain(summary: dict, deployment: str) -> dict:
    batch = summary.get("batch", "?")
    try:
        # timeout=0 starts the run and returns. The key (the report path: one per project and
        # batch) stops a batch retried after a later failure from starting a second run.
        run = run_deployment(
            deployment,
            timeout=0,
            tags=["histoflow", "drift-retrain"],
            idempotency_key=f"histoflow-drift-retrain:{summary.get('report', batch)}",
        )
    except ObjectNotFound:
        server = get_current_settings().api.url or "the ephemeral Prefect server"
        return _record(
            "retrain",
            False,
            f"deployment {deployment!r} not found on {server}: start `python flows/deployments.py`"
            " (serves it on this machine) or `prefect deploy --all` with a worker on the"
            " 'histoflow' pool, against the same Prefect server (PREFECT_API_URL)",
        )
    except Exception as exc:  # server down, bad name: the drift report still stands
        return _record("retrain", False, f"could not start deployment {deployment!r}: {exc!r}")
    record = _record("retrain", True, f"started flow run {run.name!r} of {deployment!r}")
    record["flow_run_id"] = str(run.id)
    return record


def _record(action: str, taken: bool, detail: str) -> dict:
    return {"action": action, "taken": taken, "detail": detail}
