"""How pipeline time and memory grow with the dataset: 1x, 4x and 16x the built-in dataset.

Generates the built-in synthetic dataset (6 classes) once at the largest size, 16 x 80 tiles
per class, and hard-links its first 80, 320 and 1,280 tiles per class into one throw-away
project per size (byte for byte ``histoflow data synth --per-class N --size 32``: the generator
keeps earlier tiles when the count grows). Each project runs every ``dvc.yaml`` stage cold with
``dvc repro --single-item STAGE``, timed, with the peak resident memory of its largest process.

Bench-specific choices keep the 16x run to minutes on 2 cores: 32 px tiles instead of 64
(``data.image_size: 32``), encoder 1 epoch, fusion 3 epochs without the ablation models,
200 bootstrap resamples, no cross-group protocol or Grad-CAM panels (``SCALE_PARAMS``); the
other params are the repository's. Time
growth is measured with fixed epoch counts, so it is the growth of the work per epoch. Figures: per size, each stage's time and peak memory; and, from the
same sweep, growth ratios 16x / 1x (linear time growth is 16x; flat memory is 1x). One sweep
is minutes, so the full mode sweeps once. ``--quick`` is a smoke run of the same code: the tiny
test data at 1x and 2x (3 classes x 16 and 32 tiles), ``validate`` and ``captions`` only,
``repeats`` sweeps.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _harness import BIN, REPO, Measurement, main, measure, subset  # benchmarks/ is on sys.path

from histoflow.data.synthetic import generate
from histoflow.dvc import stage_order
from histoflow.tiny import TINY, TINY_DATA, make_project

SCALES = (1, 4, 16)
QUICK_SCALES = (1, 2)
# each stage is a process start (~5 s): keep quick short; params first, every stage needs it
QUICK_STAGES = ("params", "validate", "captions")
BASE_PER_CLASS = 80  # the built-in dataset: `histoflow data synth` defaults, 6 classes x 80
# Only what must shrink for the 16x run to take minutes; everything else is params.yaml's.
SCALE_PARAMS = {
    "data": {"image_size": 32},
    # resnet18 from scratch, the default before #13: the measured scale runs stay comparable.
    "train_encoder": {"backbone": "resnet18", "pretrained": False, "epochs": 1},
    "train_fusion": {"epochs": 3, "patience": 3, "ablations": []},
    # Without evaluate's optional extras: the cross-group protocol (another fusion training)
    # and the Grad-CAM panels (a fixed number of tiles per class).
    "evaluate": {"bootstrap": 200, "cross_group": None, "explain_per_class": 0},
}
FLAT_MEMORY_STAGES = ("validate", "captions", "embed")  # target: memory flat in dataset size
_FULL_SWEEPS = 1


def run(quick: bool = False, repeats: int = 3) -> list[dict]:
    """The figures (see the module docstring)."""
    scales = QUICK_SCALES if quick else SCALES
    base = TINY_DATA["per_class"] if quick else BASE_PER_CLASS
    data_args = TINY_DATA if quick else {"per_class": BASE_PER_CLASS, "size": 32, "classes": 6}
    params = TINY if quick else SCALE_PARAMS
    sweeps = repeats if quick else _FULL_SWEEPS
    # runs[sweep][scale][stage] -> Measurement
    runs: list[dict[int, dict[str, Measurement]]] = []
    with tempfile.TemporaryDirectory(prefix="hf-bench-scale-") as tmp:
        root = Path(tmp)
        full = root / "full"
        generate(full, **{**data_args, "per_class": base * max(scales)})
        for sweep in range(sweeps):
            runs.append({})
            for k in scales:
                data = subset(full, root / f"data_{sweep}_{k}x", base * k)
                project = make_project(root / f"project_{sweep}_{k}x", data, params, repo=REPO)
                stages = [s for s in stage_order(project) if not quick or s in QUICK_STAGES]
                runs[-1][k] = {
                    stage: measure([str(BIN / "dvc"), "repro", "--single-item", stage], project)
                    for stage in stages
                }

    n_classes = data_args["classes"]
    what = (
        "tiny test params"
        if quick
        else "32 px tiles, encoder 1 epoch, fusion 3 epochs (no ablations), 200 bootstrap "
        "resamples, no cross-group protocol or Grad-CAM panels"
    )
    stages = list(runs[0][scales[0]])
    figures = []
    for k in scales:
        n = n_classes * base * k
        figures.append(
            {
                "figure": f"scale {k}x ({n:,} images): whole pipeline",
                "unit": "s",
                "samples": [sum(m.seconds for m in r[k].values()) for r in runs],
                "notes": what,
            }
        )
        figures.append(
            {
                "figure": f"scale {k}x ({n:,} images): peak memory, largest stage",
                "unit": "MiB",
                "samples": [max(m.peak_rss_mib for m in r[k].values()) for r in runs],
            }
        )
        for stage in stages:
            figures.append(
                {
                    "figure": f"scale {k}x ({n:,} images): {stage}",
                    "unit": "s",
                    "samples": [r[k][stage].seconds for r in runs],
                }
            )
            figures.append(
                {
                    "figure": f"scale {k}x ({n:,} images): {stage} peak memory",
                    "unit": "MiB",
                    "samples": [r[k][stage].peak_rss_mib for r in runs],
                }
            )
    lo, hi = scales[0], scales[-1]
    growth = f"{hi}x / {lo}x"
    figures.append(
        {
            "figure": f"scale {growth}: whole pipeline time",
            "unit": "x",
            "samples": [
                sum(m.seconds for m in r[hi].values()) / sum(m.seconds for m in r[lo].values())
                for r in runs
            ],
            "target": f"<= {hi // lo} (linear or better)",
        }
    )
    for stage in stages:
        figures.append(
            {
                "figure": f"scale {growth}: {stage} time",
                "unit": "x",
                "samples": [r[hi][stage].seconds / r[lo][stage].seconds for r in runs],
                "target": f"<= {hi // lo} (linear or better)",
            }
        )
    for stage in (s for s in FLAT_MEMORY_STAGES if s in stages):
        figures.append(
            {
                "figure": f"scale {growth}: {stage} peak memory",
                "unit": "x",
                "samples": [r[hi][stage].peak_rss_mib / r[lo][stage].peak_rss_mib for r in runs],
                "target": "about 1 (flat in dataset size)",
            }
        )
    return figures


if __name__ == "__main__":
    sys.exit(main(__doc__))
