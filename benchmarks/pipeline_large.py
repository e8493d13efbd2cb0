"""The whole pipeline at the source systems' sizes: 100,000 tiles once, against 7,680.

Run on demand (hours, not ``make bench``'s minutes): ``python benchmarks/suite.py --only
pipeline_large`` or ``python benchmarks/pipeline_large.py``. Generates the built-in synthetic
dataset (6 classes, 32 px) once at the largest size and hard-links the first tiles per class
into one throw-away project per size, as ``pipeline_scale`` does, with its bench params
(``SCALE_PARAMS``). Each project runs every ``dvc.yaml`` stage cold with ``dvc repro
--single-item STAGE``; per stage it records the wall time, the time per tile, the peak
resident memory of its largest process (dvc's included) and of its whole process tree, and
apart the peak of the stage's own processes and of dvc's (each process's kernel high-water
mark, sampled every 100 ms): dvc repro hashes the data folder's files in its own process,
~3 KB per file, which is DVC's cost, not the stage's, and hid the stage's growth.

Targets (issue #12): every stage's peak (its own processes) at the largest size within 1.3x
of its peak at the smallest, and every process under 4 GiB; time per tile at the largest size
no worse than at the smallest; the whole largest run under 2 hours on the 2-core machine. ``HISTOFLOW_LARGE_SIZES`` (tiles,
comma-separated, e.g. ``7680,15360``) measures other sizes; the largest is compared with the
smallest. ``--quick`` runs the same code on 480 and 960 tiles.

Disk per size: the feature store, all of ``outputs/`` (with the embedding caches), the DVC cache
and the images. The projection to 259,000 and 1,000,000 tiles (:func:`projection`) comes from the
two measured sizes: each stage's time as ``a + b x tiles`` through them, memory flat when the
growth is within the target (else extended along the same line), disk per tile as measured at
the largest size. ``python benchmarks/pipeline_large.py --project RESULTS.json`` prints it for
a finished run's results.
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
PROJECT_TO = (259_000, 1_000_000)
_DISK = {  # figure name -> what is measured, relative to the project
    "feature store": ("outputs/embed/features.safetensors",),
    "outputs (with the embedding caches)": ("outputs",),
    "DVC cache": (".dvc/cache",),
    "images": ("data",),
}


_STAGE_PEAK = " peak memory (stage, without dvc)"


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
    disk: dict[int, dict[str, int]] = {}
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
            disk[n] = {
                what: sum(_bytes(project / p) for p in paths) for what, paths in _DISK.items()
            }
    figures = _figures(runs, generated_s, max(sizes))
    figures += [
        {"figure": f"{n:,} tiles: disk, {what}", "unit": "MiB", "samples": [size / 2**20]}
        for n, sizes_ in disk.items()
        for what, size in sizes_.items()
    ]
    return figures + projection(figures)


def _bytes(path: Path) -> int:
    """Bytes ``path`` takes on disk (a folder: every file once, hard links counted once)."""
    if path.is_file():
        return path.stat().st_blocks * 512
    seen: set[tuple[int, int]] = set()
    total = 0
    for file in path.rglob("*"):
        info = file.lstat()
        if file.is_file() and (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
    return total


def projection(figures: list[dict], to: tuple[int, ...] = PROJECT_TO) -> list[dict]:
    """What larger sizes would need, from a run's figures at two sizes (see the docstring).

    Time: each stage as ``a + b x tiles`` through the smallest and largest measured sizes
    (``a``: start-up and imports, ``b``: the per-tile cost; a stage whose cost grows faster than
    linearly is underestimated, and a capped part counts as constant). Memory: the largest
    size's peak when its growth over the smallest is within ``MEMORY_GROWTH_TARGET``, else
    extended along the line through both. Disk: bytes per tile at the largest size.
    """
    seconds: dict[int, dict[str, float]] = {}
    peaks: dict[int, dict[str, float]] = {}
    disk: dict[int, dict[str, float]] = {}
    for f in figures:
        head, _, what = f["figure"].partition(" tiles: ")
        if not what or not head.replace(",", "").isdigit():
            continue
        n, value = int(head.replace(",", "")), f["samples"][0]
        if what.endswith(_STAGE_PEAK):
            peaks.setdefault(n, {})[what.removesuffix(_STAGE_PEAK)] = value
        elif what.startswith("disk, "):
            disk.setdefault(n, {})[what.removeprefix("disk, ")] = value
        elif f["unit"] == "s" and what != "whole pipeline":
            seconds.setdefault(n, {})[what] = value
    if len(seconds) < 2:
        return []
    lo, hi = min(seconds), max(seconds)
    out = []
    for n in to:
        total = 0.0
        for stage, t_hi in seconds[hi].items():
            slope = max(0.0, (t_hi - seconds[lo][stage]) / (hi - lo))
            t = t_hi + slope * (n - hi)
            total += t
            out.append({"figure": f"projected {n:,} tiles: {stage}", "unit": "s", "samples": [t]})
            p_lo, p_hi = peaks.get(lo, {}).get(stage), peaks.get(hi, {}).get(stage)
            if p_lo and p_hi:
                grows = p_hi / p_lo > MEMORY_GROWTH_TARGET
                peak = p_hi + (max(0.0, (p_hi - p_lo) / (hi - lo)) * (n - hi) if grows else 0.0)
                out.append(
                    {
                        "figure": f"projected {n:,} tiles: {stage} peak memory",
                        "unit": "MiB",
                        "samples": [peak],
                        "notes": "extended along the measured growth" if grows else "flat",
                    }
                )
        out.append(
            {"figure": f"projected {n:,} tiles: whole pipeline", "unit": "s", "samples": [total]}
        )
        for what, mib in disk.get(hi, {}).items():
            out.append(
                {
                    "figure": f"projected {n:,} tiles: disk, {what}",
                    "unit": "MiB",
                    "samples": [mib / hi * n],
                }
            )
    return out


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
                {
                    "figure": f"{n:,} tiles: {stage} peak memory (stage, without dvc)",
                    "unit": "MiB",
                    "samples": [m.children_peak_mib],
                },
                {
                    "figure": f"{n:,} tiles: {stage} peak memory (dvc)",
                    "unit": "MiB",
                    "samples": [m.root_peak_mib],
                },
            ]
    for stage in runs[lo]:
        small, large = runs[lo][stage], runs[hi][stage]
        figures += [
            {
                "figure": f"{hi:,} / {lo:,} tiles: {stage} peak memory",
                "unit": "x",
                "samples": [large.children_peak_mib / small.children_peak_mib],
                "target": f"<= {MEMORY_GROWTH_TARGET}",
                "notes": "the stage's processes, without dvc",
            },
            {
                "figure": f"{hi:,} / {lo:,} tiles: {stage} peak memory (dvc)",
                "unit": "x",
                "samples": [large.root_peak_mib / small.root_peak_mib],
                "notes": "dvc repro's own process: it hashes the data folder's files",
            },
            {
                "figure": f"{hi:,} / {lo:,} tiles: {stage} time per tile",
                "unit": "x",
                "samples": [(large.seconds / hi) / (small.seconds / lo)],
                "target": "<= 1",
            },
        ]
    return figures


def _print_projection(results: Path) -> int:
    """``--project RESULTS.json``: the projection of a finished run, as a markdown table."""
    import json

    data = json.loads(results.read_text())
    figures = data["modules"]["pipeline_large"]["figures"] if "modules" in data else data
    print("| figure | value | unit | notes |\n|---|---|---|---|")
    for f in projection([f for f in figures if not f["figure"].startswith("projected ")]):
        print(f"| {f['figure']} | {f['samples'][0]:,.0f} | {f['unit']} | {f.get('notes', '')} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--project":
        sys.exit(_print_projection(Path(sys.argv[2])))
    sys.exit(main(__doc__))
