"""Throw-away histoflow projects for the pipeline benchmarks, and timed, memory-measured commands.

A benchmark project is what ``make demo`` works in, built in a temporary folder (never in the
repository's own outputs): this repository's ``dvc.yaml``, ``flows/``, ``src/`` (``dvc.yaml``
lists source files as deps) and ``params.yaml`` with overrides, a synthetic ``data/`` folder,
``git init`` and ``dvc init``.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

from histoflow.data.synthetic import generate
from histoflow.tiny import TINY, TINY_DATA

__all__ = [
    "BIN",
    "QUICK_DATA",
    "QUICK_PARAMS",
    "REPO",
    "Measurement",
    "bench_env",
    "combined",
    "make_project",
    "measure",
    "subset_data",
    "synth_data",
]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the environment's `histoflow` and `dvc`
_SAMPLE_EVERY_S = 0.1  # each sample walks /proc, on the cores the measured command uses

# Quick mode: the test suite's tiny dataset and params (histoflow.tiny).
QUICK_DATA = {k: TINY_DATA[k] for k in ("classes", "per_class", "size")}
QUICK_PARAMS = TINY


@dataclass(frozen=True)
class Measurement:
    """One command: wall time and peak memory.

    ``peak_rss_mib`` is the largest resident set of any single process of the command's tree
    (exact: the kernel's high-water mark, returned by ``wait4`` for the child and every
    descendant it waited for); ``tree_peak_mib`` the largest sum of RSS over the live tree,
    sampled every 100 ms (an upper bound: shared pages count in every process).
    """

    seconds: float
    peak_rss_mib: float
    tree_peak_mib: float
    output: str


def bench_env() -> dict[str, str]:
    """The environment for ``histoflow`` / ``dvc`` commands: offline, project-local stores."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_HOME")}
    env.pop("PREFECT_API_URL", None)  # a temporary local Prefect server, as in `make demo`
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
    )
    # Prefect's default 20 s for its temporary server to start is too short on a loaded machine.
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    return env


def measure(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> Measurement:
    """Run ``cmd`` in ``cwd``; its wall time and peak memory. Fails with its output if it fails."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env or bench_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    sampler = _TreeSampler(proc.pid)
    sampler.start()
    output = proc.stdout.read()  # drains the pipe so the child never blocks on it
    # wait4 (not Popen.wait): its rusage carries the child's and its descendants' peak RSS.
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
    sampler.stop()
    proc.stdout.close()
    if proc.returncode:
        tail = "\n".join(output.splitlines()[-40:])
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}) in {cwd}:\n{tail}")
    peak = usage.ru_maxrss / 1024  # KiB on Linux
    return Measurement(seconds, round(peak, 1), round(max(sampler.peak_mib, peak), 1), output)


def combined(measurements: list[Measurement]) -> Measurement:
    """Several commands as one step: summed time, the largest peaks."""
    return Measurement(
        seconds=sum(m.seconds for m in measurements),
        peak_rss_mib=max(m.peak_rss_mib for m in measurements),
        tree_peak_mib=max(m.tree_peak_mib for m in measurements),
        output="".join(m.output for m in measurements),
    )


class _TreeSampler(threading.Thread):
    """Largest sum of RSS over a process and its live descendants, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.peak_mib = 0.0
        self._pid = pid
        self._done = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self._pid)
        except psutil.Error:  # exited already
            return
        while not self._done.wait(_SAMPLE_EVERY_S):
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:  # exited meanwhile
                continue
            total = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):  # exited meanwhile
                    total += p.memory_info().rss
            self.peak_mib = max(self.peak_mib, total / 2**20)

    def stop(self) -> None:
        self._done.set()
        self.join()


def synth_data(out: Path, *, per_class: int, size: int = 64, classes: int = 6) -> Path:
    """The built-in synthetic dataset (``histoflow data synth``'s defaults but these)."""
    generate(out, classes=classes, per_class=per_class, size=size, seed=0)
    return out


def subset_data(full: Path, out: Path, per_class: int) -> Path:
    """The first ``per_class`` tiles of each class of ``full``, hard-linked into ``out``.

    The generator keeps earlier tiles when ``per_class`` grows (tiles and patients are drawn
    per class index), so this is byte for byte ``histoflow data synth --per-class N``.
    """
    import pandas as pd

    table = pd.read_csv(full / "manifest.csv", dtype=str)
    table = table.groupby("label", sort=False, group_keys=False).head(per_class)
    for rel in table["path"]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(full / rel, out / rel)
    table.to_csv(out / "manifest.csv", index=False)
    return out


def make_project(root: Path, data: Path, overrides: dict | None = None) -> Path:
    """A fresh git + DVC project at ``root`` running this repository's pipeline on ``data``.

    Args:
        root: the project folder (created).
        data: a dataset folder, hard-linked (or copied) into ``root/data``.
        overrides: ``{section: {key: value}}`` merged into the repository's ``params.yaml``.
    """
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "flows", root / "flows", ignore=ignore)
    shutil.copytree(REPO / "src", root / "src", ignore=ignore)
    shutil.copytree(data, root / "data", copy_function=_link_or_copy)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in (overrides or {}).items():
        params[section] = {**params[section], **copy.deepcopy(values)}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "monitoring").mkdir()
    (root / ".gitignore").write_text("/data\n/mlruns\n/.prefect\n/monitoring/inbox\n")
    env = bench_env()
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for cmd in (
        ["git", "init", "-q"],
        [str(BIN / "dvc"), "init", "-q"],
        [str(BIN / "dvc"), "config", "core.analytics", "false"],
        ["git", "add", "-A"],
        [*git, "commit", "-qm", "benchmark project"],
    ):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return root


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)
