"""An interrupted `histoflow run` never blocks the next one (real runs, real signals)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from histoflow.project import DEFAULTS

pytestmark = pytest.mark.slow


@pytest.fixture()
def start(bin_dir):
    """``start(root, *args)``: `histoflow run ARGS` in its own process group; killed at the end."""
    started = []

    def run(root, *args) -> subprocess.Popen:
        started.append(_start(root, bin_dir, *args))
        return started[-1]

    yield run
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _start(root, bin_dir, *args) -> subprocess.Popen:
    # The user's shell: no Prefect server of the session's, the project's own .prefect/.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(DEFAULTS)
    return subprocess.Popen(
        [f"{bin_dir}/histoflow", "run", *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives it
        # and Ctrl-C's default action, as a terminal's foreground job has (a disposition this
        # worker process inherited or was left with would otherwise pass on to the run).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _until(proc: subprocess.Popen, pattern: str, timeout: float = 300) -> list[str]:
    """Lines of ``proc`` up to the first matching ``pattern`` (the test fails after timeout)."""
    lines, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        if re.search(pattern, line):
            return lines
        assert time.monotonic() < deadline, "".join(lines)
    raise AssertionError(f"{pattern!r} never came; exit {proc.wait()}:\n{''.join(lines)}")


def _gone(proc: subprocess.Popen, port: int, timeout: float = 20) -> None:
    """No process left in the run's group, and soon its Prefect server no longer listening."""
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return
        assert time.monotonic() < deadline, f"a Prefect server still listens on {port}"
        time.sleep(0.2)


def test_interrupted_runs_do_not_block_the_next(tmp_path, trained_project, start):
    root = tmp_path / "project"
    shutil.copytree(trained_project, root, symlinks=True)

    # Ctrl-C (SIGINT to the process group) during a stage: one is enough, exit 130, quickly.
    run = start(root, "--force")
    port = int(re.search(r":(\d+) ", "".join(_until(run, r"Prefect server on")))[1])
    _until(run, r"params: started")
    os.killpg(run.pid, signal.SIGINT)
    started = time.monotonic()
    rest = run.communicate(timeout=60)[0]
    assert run.returncode == 130, rest
    assert time.monotonic() - started < 30 and rest.strip().endswith("histoflow: interrupted")
    _gone(run, port)

    # kill -9 of the whole group during a stage (the slot was free: this run got it at once).
    run = start(root, "--force")
    port = int(re.search(r":(\d+) ", "".join(_until(run, r"Prefect server on")))[1])
    _until(run, r"params: started")
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    _gone(run, port)  # the kernel's parent-death signal stops the server

    # The next run waits for the dead run's lease to expire, says so, and completes.
    run = start(root)
    out = run.communicate(timeout=600)[0]
    assert run.returncode == 0, out
    assert re.search(r"waiting since .* for a slot .*'histoflow-training'.* held by", out), out
    assert "got the 'histoflow-training' slot" in out and '"version": "1"' in out


def test_kill_term_of_histoflow_server_stops_the_prefect_server(tmp_path, bin_dir):
    from servers import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(DEFAULTS, PREFECT_HOME=str(tmp_path / ".prefect"))
    server = subprocess.Popen(
        [f"{bin_dir}/histoflow", "server", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None and time.monotonic() < deadline, "no server came up"
            time.sleep(0.3)
        server.send_signal(signal.SIGTERM)  # to `histoflow server` alone, not its group
        server.wait(timeout=60)
        _gone(server, port)
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left of its group
            os.killpg(server.pid, signal.SIGKILL)


def test_the_console_keeps_what_a_person_needs(monkeypatch):
    import logging
    import sys

    import prefect.main  # noqa: F401 (sets up Prefect's logging, as loading a flow does)
    from prefect.logging.handlers import PrefectConsoleHandler

    from histoflow.orchestration import quiet_console

    monkeypatch.delenv("HISTOFLOW_DEBUG", raising=False)
    (console,) = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    monkeypatch.setattr(console, "filters", list(console.filters))  # as it was, after the test
    quiet_console()

    def shown(message: str, level: int = logging.INFO, **extra) -> logging.LogRecord | None:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            record = logging.LogRecord(
                "prefect.task_runs", level, "", 0, message, (), sys.exc_info()
            )
        record.__dict__.update(extra)
        return record if console.filter(record) else None

    task = {"task_run_id": "1"}
    assert shown("Finished in state Completed()", **task) is None
    assert shown("Task run failed with exception: DvcError('x')", logging.ERROR, **task) is None
    assert shown("Finished in state Failed('Flow run encountered an exception')") is None
    assert shown("View at http://127.0.0.1:4242/runs/flow-run/1") is None
    assert shown("Task run failed with exception: OSError() - Retry 1/2 will start", **task)
    kept = shown("validate: done in 3.1 s", **task)
    assert kept is not None and kept.exc_info is None  # no traceback on the console
    assert shown("Finished in state Completed()") is not None  # the flow's own end stays
