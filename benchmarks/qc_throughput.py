"""Throughput and peak memory of ``validate``'s per-image QC table on small PNG tiles.

Times :func:`histoflow.data.quality.table.feature_table` on distinct 64 px synthetic H&E tiles: in this
process, with 2 worker processes writing a parquet cache, and the cached re-runs (each repeat
from an empty cache), checking that every run returns the same table. The peak memory is that
of the whole process tree, workers included.

Targets (issue "Data contracts"): at least 500 images/s on 2 cores for 64 px PNGs, and peak
memory under 1 GB at 20,000 images.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from _harness import PeakMemory, main, tiles  # benchmarks/ is on sys.path

from histoflow.data.quality.table import feature_table

TARGET_IMAGES_PER_S = 500
TARGET_PEAK_MIB = 1000
WORKERS = 2  # validate's default
FIRST, CACHED = f"workers={WORKERS}, writing the cache", f"cached re-run, workers={WORKERS}"


def run(quick: bool = False, repeats: int = 3) -> list[dict]:
    """The figures, each speed measured ``repeats`` times.

    Full: speeds on 5,000 tiles and the peak memory once on 20,000 (the target's size; 2
    workers writing the cache); quick: 400 tiles for both. Ratios come from the same repeat.
    """
    n, n_speed = (400, 400) if quick else (20_000, 5_000)
    with tempfile.TemporaryDirectory(prefix="qc_bench_") as tmp:
        folder = Path(tmp) / "tiles"
        paths = [folder / p for p in tiles(folder, n, size=64)["path"]]
        reps = [_runs(paths[:n_speed], Path(tmp) / f"qc_cache_{i}.parquet") for i in range(repeats)]
        memory = _timed(paths, workers=WORKERS, cache=Path(tmp) / "qc_cache_memory.parquet")

    def speeds(name: str) -> list[float]:
        return [n_speed / r[name]["seconds"] for r in reps]

    note = f"{n_speed:,} distinct 64 px PNGs"
    return [
        {
            "figure": "validate QC table, 1 process",
            "unit": "images/s",
            "samples": speeds("workers=0"),
            "notes": note,
        },
        {
            "figure": f"validate QC table, {WORKERS} worker processes",
            "unit": "images/s",
            "samples": speeds(FIRST),
            "target": f">= {TARGET_IMAGES_PER_S}/s on 2 cores",
            "notes": note,
        },
        {
            "figure": f"validate QC table, {WORKERS} workers vs 1 process",
            "unit": "x faster",
            "samples": [r["workers=0"]["seconds"] / r[FIRST]["seconds"] for r in reps],
        },
        {
            "figure": "validate QC table, cached re-run vs first run",
            "unit": "x faster",
            "samples": [r[FIRST]["seconds"] / r[CACHED]["seconds"] for r in reps],
        },
        {
            "figure": f"validate QC table, peak memory at {n:,} images (process tree)",
            "unit": "MiB",
            "samples": [memory["tree_peak_mib"]],
            "target": f"< {TARGET_PEAK_MIB} MiB at 20,000 images",
            "notes": f"{n:,} distinct 64 px PNGs, {WORKERS} workers writing the cache; one run "
            f"({n / memory['seconds']:.0f} images/s)",
        },
    ]


def _runs(paths: list[Path], cache: Path) -> dict[str, dict]:
    """The four runs (1 process; workers writing the cache; two cached re-runs), checked equal."""
    runs = {
        name: _timed(paths, **kwargs)
        for name, kwargs in [
            ("workers=0", {"workers": 0}),
            (FIRST, {"workers": WORKERS, "cache": cache}),
            ("cached re-run, workers=0", {"workers": 0, "cache": cache}),
            (CACHED, {"workers": WORKERS, "cache": cache}),
        ]
    }
    for name, r in runs.items():  # every run must give the same table
        pd.testing.assert_frame_equal(r["table"], runs["workers=0"]["table"], obj=f"run {name!r}")
    return runs


def _timed(paths: list[Path], **kwargs) -> dict:
    """One ``feature_table`` call: its table, seconds and the process tree's peak memory."""
    with PeakMemory() as memory:
        started = time.perf_counter()
        table = feature_table(paths, progress=False, **kwargs)
        seconds = time.perf_counter() - started
    return {"table": table, "seconds": seconds, "tree_peak_mib": round(memory.peak_mib, 1)}


if __name__ == "__main__":
    sys.exit(main(__doc__))
