"""Throughput and peak memory of :func:`~histoflow.data.quality.table.feature_table` on PNG tiles.

Usage::

    python benchmarks/qc_throughput.py [--n 20000] [--size 64] [--workers 2]

Writes N distinct RGB PNG tiles to a temporary folder (a few hundred synthetic H&E tiles from
:func:`histoflow.data.synthetic.generate`, then cheap variants of them: rotations, flips and
rolls), then times ``feature_table`` in-process, with worker processes (also writing a parquet
cache) and the cached re-runs, and checks that every run returns the same table. Each run records
wall time, CPU time and peak resident memory of the whole process tree (workers included).
Prints a markdown table and writes ``benchmarks/results/qc_throughput.json``; ``run`` gives the
same measurements to the suite (``benchmarks/suite.py``, ``make bench``).

Targets (issue "Data contracts"): at least 500 images/s on 2 cores for 64 px PNGs, and peak
memory under 1 GB at 20,000 images.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _machine import machine_info  # benchmarks/ is on sys.path when run as a script
from PIL import Image

from histoflow.data.quality.table import feature_table
from histoflow.data.synthetic import generate
from histoflow.io import write_json

RESULTS = Path(__file__).parent / "results" / "qc_throughput.json"
TARGET_IMAGES_PER_S = 500
TARGET_PEAK_MIB = 1000
_BASE_TILES = 300  # synthetic tiles drawn from scratch (~10 ms each); the rest are variants
_SAMPLE_EVERY_S = 0.1


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="number of tiles")
    parser.add_argument("--size", type=int, default=64, help="tile side in pixels")
    parser.add_argument("--workers", type=int, default=2, help="worker processes to compare")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="qc_bench_") as tmp:
        started = time.perf_counter()
        paths = make_tiles(Path(tmp), n=args.n, size=args.size)
        make_s = time.perf_counter() - started
        load_before = os.getloadavg()
        w = args.workers
        runs, distinct = _measure(paths, Path(tmp) / "qc_cache.parquet", w)

    peak = {
        "process_tree_mib": max(run["tree_peak_mib"] for run in runs.values()),
        "largest_descendant_mib": max(run["largest_descendant_peak_mib"] for run in runs.values()),
        "parent_ru_maxrss_mib": _ru_maxrss_mib(resource.RUSAGE_SELF),
        # Waited-for children only: forkserver workers are the server's children, so they
        # show up here only once the server has exited; process_tree_mib counts them.
        "children_ru_maxrss_mib": _ru_maxrss_mib(resource.RUSAGE_CHILDREN),
    }
    with_workers = runs[f"workers={w}, writing the cache"]
    results = {
        "n": args.n,
        "size": args.size,
        "workers": w,
        "distinct_files": int(distinct),
        "make_tiles_s": round(make_s, 2),
        "runs": runs,
        "peak_memory": peak,
        "targets": {
            "images_per_s": TARGET_IMAGES_PER_S,
            "peak_mib": TARGET_PEAK_MIB,
            "throughput_met": with_workers["images_per_s"] >= TARGET_IMAGES_PER_S,
            "memory_met": max(peak["process_tree_mib"], peak["parent_ru_maxrss_mib"])
            < TARGET_PEAK_MIB,
        },
        "machine": machine_info(load_before),
    }
    print(_markdown(results))
    write_json(args.out, results)
    print(f"\nwrote {args.out}")
    return results


def run(quick: bool = False, repeats: int = 3) -> list[dict]:
    """The suite's figures (``benchmarks/suite.py``): each speed measured ``repeats`` times.

    Full: speeds on 5,000 tiles, ``repeats`` times, and the peak memory once on 20,000 tiles
    (the target's size; ``validate``'s default 2 workers, writing the cache); quick: 400 tiles
    for both. The tiles are written once; each run starts from an empty parquet cache. Ratios
    come from the same repeat's runs.
    """
    n, n_speed, w = (400, 400, 2) if quick else (20_000, 5_000, 2)
    with tempfile.TemporaryDirectory(prefix="qc_bench_") as tmp:
        paths = make_tiles(Path(tmp), n=n, size=64)
        reps = []
        for i in range(repeats):
            runs, _ = _measure(paths[:n_speed], Path(tmp) / f"qc_cache_{i}.parquet", w)
            reps.append(runs)
        memory, _ = _run(paths, workers=w, cache=Path(tmp) / "qc_cache_memory.parquet")
    first, cached = f"workers={w}, writing the cache", f"cached re-run, workers={w}"

    def samples(name: str, key: str) -> list[float]:
        return [r[name][key] for r in reps]

    note = f"{n_speed:,} distinct 64 px PNGs"
    return [
        {
            "figure": "validate QC table, 1 process",
            "unit": "images/s",
            "samples": samples("workers=0", "images_per_s"),
            "notes": note,
        },
        {
            "figure": f"validate QC table, {w} worker processes",
            "unit": "images/s",
            "samples": samples(first, "images_per_s"),
            "target": f">= {TARGET_IMAGES_PER_S}/s on 2 cores",
            "notes": note,
        },
        {
            "figure": f"validate QC table, {w} workers vs 1 process",
            "unit": "x faster",
            "samples": [r["workers=0"]["seconds"] / r[first]["seconds"] for r in reps],
        },
        {
            "figure": "validate QC table, cached re-run vs first run",
            "unit": "x faster",
            "samples": [r[first]["seconds"] / r[cached]["seconds"] for r in reps],
        },
        {
            "figure": f"validate QC table, peak memory at {n:,} images (process tree)",
            "unit": "MiB",
            "samples": [memory["tree_peak_mib"]],
            "target": f"< {TARGET_PEAK_MIB} MiB at 20,000 images",
            "notes": f"{n:,} distinct 64 px PNGs, {w} workers writing the cache; one run "
            f"({memory['images_per_s']:.0f} images/s)",
        },
    ]


def _measure(paths: list[Path], cache: Path, w: int) -> tuple[dict, int]:
    """The four runs (1 process; workers writing the cache; two cached re-runs), checked equal."""
    runs, tables = {}, {}
    for name, kwargs in [
        ("workers=0", {"workers": 0}),
        (f"workers={w}, writing the cache", {"workers": w, "cache": cache}),
        ("cached re-run, workers=0", {"workers": 0, "cache": cache}),
        (f"cached re-run, workers={w}", {"workers": w, "cache": cache}),
    ]:
        runs[name], tables[name] = _run(paths, **kwargs)
    first = tables["workers=0"]
    for name, table in tables.items():  # every run must give the same table
        pd.testing.assert_frame_equal(table, first, obj=f"table of run {name!r}")
    return runs, first["sha256"].nunique()


def make_tiles(folder: Path, *, n: int, size: int) -> list[Path]:
    """Write ``n`` distinct RGB PNG tiles of ``size`` px into ``folder``; return their paths.

    Draws at most a few hundred synthetic tiles, then writes variant ``k`` of base tile ``b``
    for file ``i = k * n_base + b``: rotated by ``k % 4`` quarter turns, mirrored when
    ``k // 4`` is odd and rolled by ``k // 8`` pixels, so files differ but look like tissue.
    """
    base_dir = folder / "base"
    per_class = -(-min(n, _BASE_TILES) // 6)  # ceil: 6 classes
    generate(base_dir, classes=6, per_class=per_class, size=size, seed=0)
    bases = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(base_dir.rglob("*.png"))]

    out = folder / "tiles"
    out.mkdir()
    paths = []
    for i in range(n):
        k, b = divmod(i, len(bases))
        tile = np.rot90(bases[b], k % 4)
        if (k // 4) % 2:
            tile = tile[:, ::-1]
        shift = k // 8
        tile = np.roll(tile, (shift % size, (3 * shift) % size), axis=(0, 1))
        path = out / f"tile_{i:06d}.png"
        Image.fromarray(np.ascontiguousarray(tile)).save(path, compress_level=6)
        paths.append(path)
    return paths


def _run(paths: list[Path], **kwargs) -> tuple[dict, pd.DataFrame]:
    """One timed ``feature_table`` call, with CPU time and memory of the whole process tree."""
    times = os.times()
    with _TreeMonitor() as monitor:
        started = time.perf_counter()
        table = feature_table(paths, progress=False, **kwargs)
        seconds = time.perf_counter() - started
    now = os.times()
    cpu_s = now.user - times.user + now.system - times.system + monitor.descendants_cpu_s
    run = {
        "seconds": round(seconds, 3),
        "images_per_s": round(len(paths) / seconds, 1),
        # CPU seconds of this process and its descendants: unlike images/s, this does not
        # depend on what else the machine runs. 2 cores give at most 2 * images_per_cpu_s.
        "cpu_s": round(cpu_s, 2),
        "images_per_cpu_s": round(len(paths) / cpu_s, 1),
        "tree_peak_mib": round(monitor.peak_total_mib, 1),
        "largest_descendant_peak_mib": round(monitor.peak_descendant_mib, 1),
    }
    return run, table


class _TreeMonitor:
    """Samples memory and CPU time of this process's descendants in a thread.

    ``peak_total_mib`` is the largest sum of VmRSS over this process and its descendants
    (shared pages count in every process, so an upper bound); ``peak_descendant_mib`` the
    largest VmHWM of a descendant (a worker or the fork server); ``descendants_cpu_s`` the CPU
    time descendants used meanwhile (a process's last 0.1 s before it exits can be missed).
    """

    def __init__(self) -> None:
        self.peak_total_mib = 0.0
        self.peak_descendant_mib = 0.0
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def descendants_cpu_s(self) -> float:
        return sum(t - self._cpu_start.get(pid, 0.0) for pid, t in self._cpu_last.items())

    def __enter__(self) -> _TreeMonitor:
        # The fork server outlives a run: count only the CPU it uses from now on.
        self._cpu_start = {pid: _cpu_s(pid) for pid in _descendants(os.getpid())}
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(_SAMPLE_EVERY_S):
            self._sample()

    def _sample(self) -> None:
        me = os.getpid()
        total = _status_kib(me, "VmRSS")
        for pid in _descendants(me):
            total += _status_kib(pid, "VmRSS")
            self.peak_descendant_mib = max(
                self.peak_descendant_mib, _status_kib(pid, "VmHWM") / 1024
            )
            self._cpu_last[pid] = max(self._cpu_last.get(pid, 0.0), _cpu_s(pid))
        self.peak_total_mib = max(self.peak_total_mib, total / 1024)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])  # fields after "(comm)": state, ppid
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _ru_maxrss_mib(who: int) -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    scale = 1 if sys.platform == "darwin" else 1024
    return round(resource.getrusage(who).ru_maxrss * scale / 2**20, 1)


def _markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"feature_table on {results['n']} distinct {results['size']} px RGB PNG tiles"
        f" ({machine['cpus']} CPUs; load average {machine['load_average_before'][0]} before,"
        f" {machine['load_average_after'][0]} after)",
        "",
        "| run | seconds | images/s | CPU s | images/CPU s | tree peak MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, run in results["runs"].items():
        lines.append(
            f"| {name} | {run['seconds']:.2f} | {run['images_per_s']:.0f} | {run['cpu_s']:.1f}"
            f" | {run['images_per_cpu_s']:.0f} | {run['tree_peak_mib']:.0f} |"
        )
    lines += ["", "| peak memory | MiB |", "|---|---:|"]
    lines += [f"| {name} | {value:.0f} |" for name, value in results["peak_memory"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
