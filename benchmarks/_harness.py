"""What the benchmark modules share: running one alone, the machine, tiles and measured memory.

- :func:`main`: every module's ``__main__`` (``python benchmarks/NAME.py --quick``);
- :func:`machine`: what the figures depend on, recorded beside them (the suite's record too);
- :class:`PeakMemory`: the one memory sampler, and :func:`measure`, a command timed with it;
- :func:`tiles` and :func:`subset`: tiles from the product's synthetic generator.

Throw-away pipeline projects come from :func:`histoflow.tiny.make_project`, as in the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from histoflow.io import write_json
from histoflow.project import environment

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BIN",
    "REPO",
    "Measurement",
    "PeakMemory",
    "combined",
    "machine",
    "main",
    "measure",
    "subset",
    "tiles",
]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent  # the environment's `histoflow` and `dvc`
_SAMPLE_EVERY_S = 0.1  # each sample walks /proc, on the cores the measured work uses
# Settings that would send a benchmark project's runs to the developer's own stores.
_SHARED_STORES = ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME")


def main(doc: str) -> int:
    """Run one benchmark module alone: ``python benchmarks/NAME.py [--quick] [--repeats N]``.

    The module runs as the suite runs it, in a child process (not in the ``__main__`` that
    the worker pools of ``validate``'s QC table would preload), and its results, in the
    suite's format, go to ``--out`` (default ``benchmarks/results/NAME.json``).

    Args:
        doc: the module's docstring (its first line is the help text).

    Returns:
        The exit status: 1 when the module failed.
    """
    import suite  # here, not at the top: suite imports this module

    name = Path(sys.argv[0]).stem
    parser = argparse.ArgumentParser(prog=f"{name}.py", description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes: a smoke run")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each figure")
    parser.add_argument("--out", type=Path, default=HERE / "results" / f"{name}.json")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    results = suite.run_suite([name], quick=args.quick, repeats=args.repeats, folder=HERE)
    write_json(args.out, results)
    print(f"\n{suite.markdown(results)}\n\nwrote {args.out}")
    return 1 if results["modules"][name]["error"] else 0


def machine(load_before: tuple[float, ...] | None = None) -> dict:
    """What the figures depend on: CPU, cores, memory, GPU, versions, load, commit.

    Reads no torch (the suite's parent process stays light); the GPU comes from ``nvidia-smi``.

    Args:
        load_before: the load average when the measurements began.
    """
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": _first_line("nvidia-smi", "--query-gpu=name", "--format=csv,noheader"),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "platform": platform.platform(),
        "git_commit": _first_line("git", "-C", str(HERE), "describe", "--always", "--dirty"),
    }
    if load_before is not None:
        info["load_average_before"] = [round(x, 2) for x in load_before]
    info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return info


class PeakMemory:
    """The largest sum of resident sets over a process and its live descendants.

    Sampled every 100 ms in a thread while the ``with`` block runs, and once at its end; an
    upper bound, since shared pages count in every process. Default: this process, so work
    done here and in its worker processes is measured together.
    """

    def __init__(self, pid: int | None = None) -> None:
        self.peak_mib = 0.0
        # Each process's own high-water mark (the kernel's VmHWM, read at every sample: exact
        # unless a process peaks in its last 100 ms), by pid; the root's under its own key.
        self.hwm_mib: dict[int, float] = {}
        self._pid = os.getpid() if pid is None else pid
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_done, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self._sample()

    def _sample_until_done(self) -> None:
        while not self._done.wait(_SAMPLE_EVERY_S):
            self._sample()

    def _sample(self) -> None:
        try:
            root = psutil.Process(self._pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:  # exited meanwhile
            return
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):  # exited meanwhile
                total += p.memory_info().rss
            hwm = _high_water_mib(p.pid)
            if hwm is not None:
                self.hwm_mib[p.pid] = max(self.hwm_mib.get(p.pid, 0.0), hwm)
        self.peak_mib = max(self.peak_mib, total / 2**20)

    @property
    def root_peak_mib(self) -> float:
        """The root process's own peak (for ``dvc repro``: dvc's, hashing deps and outputs)."""
        return self.hwm_mib.get(self._pid, 0.0)

    @property
    def descendants_peak_mib(self) -> float:
        """The largest peak of any process the root started (for ``dvc repro``: the stage's)."""
        return max((v for pid, v in self.hwm_mib.items() if pid != self._pid), default=0.0)


def _high_water_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:  # exited meanwhile, or not Linux
        return None
    return None


@dataclass(frozen=True)
class Measurement:
    """One command: wall time and peak memory.

    ``peak_rss_mib`` is the largest resident set of any single process of the command's tree
    (exact: the kernel's high-water mark, returned by ``wait4`` for the child and every
    descendant it waited for); ``tree_peak_mib`` the largest sum over the live tree
    (:class:`PeakMemory`).
    """

    seconds: float
    peak_rss_mib: float
    tree_peak_mib: float
    output: str
    root_peak_mib: float = 0.0  # the command's own process (PeakMemory.root_peak_mib)
    children_peak_mib: float = 0.0  # its largest descendant (PeakMemory.descendants_peak_mib)


def measure(cmd: list[str], cwd: Path) -> Measurement:
    """Run ``cmd`` in the project ``cwd``; its wall time and peak memory.

    The environment is histoflow's (:func:`histoflow.project.environment`) on the project's
    own MLflow and Prefect stores, with this interpreter's ``histoflow`` and ``dvc`` first.

    Raises:
        RuntimeError: the command failed; the message ends with its output.
    """
    base = {k: v for k, v in os.environ.items() if k not in _SHARED_STORES}
    base["PATH"] = f"{BIN}{os.pathsep}{base.get('PATH', '')}"
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=environment(cwd, base),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    with PeakMemory(proc.pid) as tree:
        output = proc.stdout.read()  # drains the pipe so the child never blocks on it
        # wait4 (not Popen.wait): its rusage carries the child's and its descendants' peak RSS.
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
    proc.stdout.close()
    if proc.returncode:
        tail = "\n".join(output.splitlines()[-40:])
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}) in {cwd}:\n{tail}")
    peak = usage.ru_maxrss / 1024  # KiB on Linux
    return Measurement(
        seconds,
        round(peak, 1),
        round(max(tree.peak_mib, peak), 1),
        output,
        round(tree.root_peak_mib, 1),
        round(tree.descendants_peak_mib, 1),
    )


def combined(measurements: list[Measurement]) -> Measurement:
    """Several commands as one step: summed time, the largest peaks."""
    return Measurement(
        seconds=sum(m.seconds for m in measurements),
        peak_rss_mib=max(m.peak_rss_mib for m in measurements),
        tree_peak_mib=max(m.tree_peak_mib for m in measurements),
        output="".join(m.output for m in measurements),
        root_peak_mib=max(m.root_peak_mib for m in measurements),
        children_peak_mib=max(m.children_peak_mib for m in measurements),
    )


def tiles(folder: Path, n: int, *, size: int, seed: int = 0, classes: int = 6) -> pd.DataFrame:
    """``n`` distinct synthetic H&E tiles in ``folder``, from the product's generator.

    Generates ``ceil(n / classes)`` tiles per class (:func:`histoflow.data.synthetic.generate`)
    and keeps ``n`` of them, taken class by class in turn so that any first rows are balanced.

    Returns:
        A DataFrame of the kept tiles: the generator's manifest columns (``path`` relative to
        ``folder``, ``label``, ``patient_id``...) plus what ``validate``'s manifest adds that
        stages read, ``split`` (all ``train``) and ``sha256``.
    """
    import hashlib

    import pandas as pd  # here, not at the top: the suite's parent process stays light

    from histoflow.data.synthetic import generate

    manifest = generate(folder, classes=classes, per_class=-(-n // classes), size=size, seed=seed)
    table = pd.read_csv(manifest, dtype=str)
    turn = table.groupby("label", sort=False).cumcount()  # the tile's index within its class
    table = table.iloc[turn.to_numpy().argsort(kind="stable")[:n]].reset_index(drop=True)
    table["split"] = "train"
    table["sha256"] = [hashlib.sha256((folder / p).read_bytes()).hexdigest() for p in table.path]
    return table


def subset(full: Path, out: Path, per_class: int) -> Path:
    """The first ``per_class`` tiles of each class of the dataset ``full``, hard-linked into ``out``.

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


def _first_line(*cmd: str) -> str | None:
    """First line of a command's output, or None when it is missing or fails."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
