"""The whole pipeline at the source systems' sizes: 100,000 tiles once, against 7,680.

Run on demand (hours, not ``make bench``'s minutes): ``python benchmarks/suite.py --only
pipeline_large`` or ``python benchmarks/pipeline_large.py``. Generates the built-in synthetic
dataset (6 classes, 32 px) once at the largest size and hard-links the first tiles per class
into one throw-away project per size, as ``pipeline_scale`` does, with its bench params
(``SCALE_PARAMS``). Each project runs every ``dvc.yaml`` stage cold with ``dvc repro
--single-item STAGE``; per stage it records the wall time, the time per tile, the peak
resident memory of its largest process and of its whole process tree.

Targets (issue #12): every stage's peak at the largest size within 1.3x of its peak at the
smallest and under 4 GiB; time per tile at the largest size no worse than at the smallest;
the whole largest run under 2 hours on the 2-core machine. ``HISTOFLOW_LARGE_SIZES`` (tiles,
comma-separated, e.g. ``7680,15360``) measures other sizes; the largest is compared with the
smallest. ``--quick`` runs the same code on 480 and 960 tiles.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _harness import BIN, REPO, Measurement, main, measure, subset  # benchmarks/ is on sys.path
from pipeline_scale import SCALE_PARAMS

from histoflow.data.synthetic import generate
from histoflow.dvc import stage_order
from histoflow.tiny import make_project

ON_DEMAND = True
SIZES = (7_680, 100_000)
QUICK_SIZES = (480, 960)
CLASSES = 6
MEMORY_GROWTH_TARGET = 1.3  # largest / smallest peak, per stage
MEMORY_CEILING_MIB = 4 * 1024
WHOLE_RUN_TARGET_S = 2 * 3600


def _sizes(quick: bool) -> tuple[int, ...]:
    raw = os.environ.get("HISTOFLOW_LARGE_SIZES")
    if raw:
        sizes = tuple(sorted(int(s) for s in raw.split(",") if s.strip()))
        if len(sizes) < 2 or any(s % CLASSES or s < CLASSES * 16 for s in sizes):
            raise ValueError(
                f"HISTOFLOW_LARGE_SIZES={raw!r}: give two or more sizes, each a multiple of "
                f"{CLASSES} (the classes) and at least {CLASSES * 16}"
            )
        return sizes
    return QUICK_SIZES if quick else SIZES


def run(quick: bool = False, repeats: int = 1) -> list[dict]:
    """The figures (see the module docstring); one sweep whatever ``repeats`` (hours)."""
    sizes = _sizes(quick)
    runs: dict[int, dict[str, Measurement]] = {}
    with tempfile.TemporaryDirectory(prefix="hf-bench-large-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        generate(root / "full", classes=CLASSES, per_class=max(sizes) // CLASSES, size=32)
        generated_s = time.perf_counter() - started
        for n in sizes:
            data = subset(root / "full", root / f"data_{n}", n // CLASSES)
            project = make_project(root / f"project_{n}", data, SCALE_PARAMS, repo=REPO)
            runs[n] = {
                stage: measure([str(BIN / "dvc"), "repro", "--single-item", stage], project)
                for stage in stage_order(project)
            }
    return _figures(runs, generated_s, max(sizes))


def _figures(runs: dict[int, dict[str, Measurement]], generated_s: float, largest: int) -> list:
    lo, hi = min(runs), max(runs)
    figures: list[dict] = [
        {"figure": f"generate {largest:,} synthetic tiles", "unit": "s", "samples": [generated_s]}
    ]
    for n, stages in runs.items():
        total = sum(m.seconds for m in stages.values())
        target = f"< {WHOLE_RUN_TARGET_S} s" if n == hi else None
        figures.append(
            {"figure": f"{n:,} tiles: whole pipeline", "unit": "s", "samples": [total]}
            | ({"target": target} if target else {})
        )
        for stage, m in stages.items():
            figures += [
                {"figure": f"{n:,} tiles: {stage}", "unit": "s", "samples": [m.seconds]},
                {
                    "figure": f"{n:,} tiles: {stage} per tile",
                    "unit": "ms",
                    "samples": [1000 * m.seconds / n],
                },
                {
                    "figure": f"{n:,} tiles: {stage} peak memory (largest process)",
                    "unit": "MiB",
                    "samples": [m.peak_rss_mib],
                    "target": f"< {MEMORY_CEILING_MIB}",
                },
                {
                    "figure": f"{n:,} tiles: {stage} peak memory (process tree)",
                    "unit": "MiB",
                    "samples": [m.tree_peak_mib],
                },
            ]
    for stage in runs[lo]:
        small, large = runs[lo][stage], runs[hi][stage]
        figures += [
            {
                "figure": f"{hi:,} / {lo:,} tiles: {stage} peak memory",
                "unit": "x",
                "samples": [large.peak_rss_mib / small.peak_rss_mib],
                "target": f"<= {MEMORY_GROWTH_TARGET}",
            },
            {
                "figure": f"{hi:,} / {lo:,} tiles: {stage} time per tile",
                "unit": "x",
                "samples": [(large.seconds / hi) / (small.seconds / lo)],
                "target": "<= 1",
            },
        ]
    return figures


if __name__ == "__main__":
    sys.exit(main(__doc__))
