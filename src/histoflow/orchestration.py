"""Prefect around histoflow's commands: the server a command owns, and the training slot.

**The server.** Without ``PREFECT_API_URL``, ``histoflow run`` and ``histoflow monitor`` start a
Prefect server for the command (``prefect server start``, state in ``PREFECT_HOME``: the
project's ``.prefect/``) and stop it at the end. Prefect's own temporary server runs in the
command's process group, so a Ctrl-C killed it together with the run, and the run then spent
minutes retrying a dead API and could not give its concurrency slot back. This one runs in a
session of its own: a Ctrl-C stops the run, which reports itself crashed and releases what it
holds to a live server, then the server stops. Killed outright, the command takes the server with
it (Linux's parent-death signal).

**The training slot.** Training runs hold a slot of the global concurrency limit
``histoflow-training`` through a lease, Prefect's own mechanism: the run renews it every
``0.75 * LEASE_S`` seconds; a run that was killed stops renewing, and once the lease has expired
the server's repossessor gives the slot back (within ``LEASE_S`` plus the repossessor's 15 s
loop). histoflow keeps leases on disk (``PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE``, a default in
:mod:`histoflow.project`), so they outlive the server that granted them. A run that waits for the
slot says which run holds it and since when.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["LEASE_S", "TRAINING_LIMIT", "prefect_server", "quiet_console", "training_slot"]

TRAINING_LIMIT = "histoflow-training"
# Prefect's shortest lease (the API refuses less). A killed run blocks the next one at most
# this long plus the repossessor's loop; a live run renews at 45 s, well inside it.
LEASE_S = 60.0
_POLL_S = 10.0  # a run waiting this long for the slot says what it waits for
_REPORT_S = 60.0  # and then says it again this often


@contextmanager
def prefect_server(root: Path) -> Iterator[str]:
    """The Prefect API for one command: ``PREFECT_API_URL`` if set, else a server started here.

    The server listens on a free port of 127.0.0.1 with its state in ``PREFECT_HOME``; its own
    output goes to ``PREFECT_HOME/server.log``. ``PREFECT_API_URL`` points at it until the
    block ends; then queued logs and events are sent and the server is stopped.

    Raises:
        RuntimeError: the server did not answer within
            ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``, with its log's last lines.
    """
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    home = Path(os.environ.get("PREFECT_HOME") or Path(root) / ".prefect")
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    log_path = home / "server.log"
    cmd = [_venv_tool("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    # This server only serves this command: no schedules, no late-run marking, no UI.
    cmd += ["--no-scheduler", "--no-late-runs", "--no-ui", "--log-level", "WARNING"]
    started = time.monotonic()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C to the terminal's group does not reach it
            preexec_fn=_die_with_parent,
        )
    try:
        _wait_healthy(proc, api, log_path)
        print(
            f"Prefect server on {api.removesuffix('/api')} (state in {home}), "
            f"up in {time.monotonic() - started:.0f} s",
            file=sys.stderr,
        )
        os.environ["PREFECT_API_URL"] = api
        try:
            yield api
        finally:
            _flush_to_server()
            del os.environ["PREFECT_API_URL"]
    finally:
        _stop(proc)


@contextmanager
def training_slot(limit: int, holder: str | None = None, *, log=None) -> Iterator[None]:
    """Hold a slot of :data:`TRAINING_LIMIT` (created with ``limit`` slots) for the block.

    Waits while other training runs hold every slot, saying after 10 s which runs hold them and
    since when, then again every minute. The slot is leased for :data:`LEASE_S` seconds and
    renewed while the block runs; if a renewal fails (the lease was lost) the run stops rather
    than overlap another.

    Args:
        limit: slots of the limit (``deploy.training_concurrency``).
        holder: the flow run id holding the slot (recorded with the lease).
        log: a logger for the waiting messages (default: this module's).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency.sync import concurrency

    log = log or logging.getLogger(__name__)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(TRAINING_LIMIT, limit)
    lease_holder = None if holder is None else ConcurrencyLeaseHolder(type="flow_run", id=holder)
    with contextlib.ExitStack() as stack:
        with _report_waiting(limit, holder, log):  # Prefect re-asks as the server advises
            stack.enter_context(
                concurrency(
                    TRAINING_LIMIT,
                    occupy=1,
                    lease_duration=LEASE_S,
                    strict=True,
                    holder=lease_holder,
                )
            )
        yield


@contextmanager
def _report_waiting(limit: int, holder: str | None, log) -> Iterator[None]:
    acquired, since = threading.Event(), datetime.now(UTC)

    def report() -> None:
        wait = _POLL_S
        while not acquired.wait(wait):
            log.warning(_waiting_message(limit, holder, since))
            wait = _REPORT_S

    reporter = threading.Thread(target=report, name="histoflow-slot-wait", daemon=True)
    reporter.start()
    try:
        yield
    finally:
        acquired.set()
        reporter.join()
    if (datetime.now(UTC) - since).total_seconds() >= _POLL_S:
        log.info(f"got the {TRAINING_LIMIT!r} slot after waiting since {_clock(since)}")


def quiet_console() -> None:
    """Keep Prefect's terminal output to what a person needs while a command runs a flow.

    On Prefect's console handler only (the Prefect API, and so the UI, still gets every record
    with its traceback): no tracebacks, no "Finished in state Completed()" per task (the
    stage's own "done in" line says it), and none of the four records that repeat a failure
    the command prints last anyway. ``HISTOFLOW_DEBUG=1`` keeps everything.
    """
    if os.environ.get("HISTOFLOW_DEBUG"):
        return
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            isinstance(f, _ConsoleFilter) for f in handler.filters
        ):
            handler.addFilter(_ConsoleFilter())


class _ConsoleFilter(logging.Filter):
    _REPEATS = (
        "Task run failed with",
        "Encountered exception during execution",
        "Finished in state Failed(",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if getattr(record, "task_run_id", None) and message == "Finished in state Completed()":
            return False
        if message.startswith("View at "):  # the UI of a server that stops with the command
            return False
        if message.startswith(self._REPEATS) and " - Retry " not in message:
            return False  # the command prints the error last anyway
        # The console is the last handler a record reaches (the API handler sits on the
        # Prefect loggers themselves, before propagation), so the traceback is not lost.
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def _waiting_message(limit: int, holder: str | None, since: datetime) -> str:
    held_by = "; ".join(
        f"flow run {run.name!r} (started {_clock(run.start_time) if run.start_time else '?'})"
        for run in _running_training_runs(exclude=holder)
    )
    return (
        f"waiting since {_clock(since)} for a slot of the Prefect concurrency limit "
        f"{TRAINING_LIMIT!r} ({limit} at once), held by {held_by or 'another training run'}; "
        f"a run that was killed gives its slot back when its {LEASE_S:.0f} s lease expires"
    )


def _running_training_runs(exclude: str | None) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    try:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[TRAINING_LIMIT])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
                ),
                limit=10,
            )
    except Exception:  # only for the message: waiting goes on without it
        return []
    return [r for r in runs if str(r.id) != str(exclude)]


def _clock(moment: datetime) -> str:
    return moment.astimezone().strftime("%H:%M:%S")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    # In the child before exec: the kernel sends SIGTERM when the command dies, even by kill -9.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait_healthy(proc: subprocess.Popen, api: str, log_path: Path) -> None:
    timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 180))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{api}/health", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-15:])
    state = (
        f"exited with {proc.returncode}"
        if proc.poll() is not None
        else f"no answer in {timeout:.0f} s"
    )
    raise RuntimeError(
        f"the Prefect server for this run did not start ({state}); {log_path}:\n{tail}"
    )


def _flush_to_server() -> None:
    # Logs and events still queued go to the server before it stops, not into retries after.
    with contextlib.suppress(Exception):
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
    with contextlib.suppress(Exception):
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=5)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _venv_tool(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else name
