"""The ``make demo`` pipeline end to end, its stages, and what Prefect + MLflow add to DVC.

In a throw-away project (git + DVC, this repository's pipeline and ``params.yaml``) on the
built-in synthetic dataset (6 classes x 80 tiles of 64 px), does what ``make demo`` does after
installation, one command at a time so each is timed with its peak memory:

1. every ``dvc.yaml`` stage cold (``dvc repro --single-item STAGE``, which is what each task of
   the training flow runs);
2. ``histoflow run``: the training flow, whose stages DVC now skips, so this is Prefect plus
   MLflow logging, registration and promotion;
3. two new batches (``histoflow data synth``, 20 tiles per class; one stain-shifted) in the
   monitoring inbox and ``histoflow monitor --inbox``, which reports on both.

Then, in the same project with everything cached, ``dvc repro`` and ``histoflow run``
alternately ``repeats`` times: the no-op wall times and their difference, the overhead of
Prefect + MLflow over plain DVC. The end-to-end run happens once (it is minutes of work); the
no-op pairs are repeated. ``--quick`` uses the test suite's tiny data and params and monitors
one batch.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _harness import BIN, REPO, Measurement, combined, main, measure  # benchmarks/ is on sys.path

from histoflow.data.synthetic import generate
from histoflow.dvc import stage_order
from histoflow.tiny import TINY, TINY_DATA, make_project

_BATCHES = (("demo_in_distribution", 101, 0.0), ("demo_stain_shift", 102, 1.0))


def run(quick: bool = False, repeats: int = 3) -> list[dict]:
    """The figures (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="hf-bench-demo-") as tmp:
        root = Path(tmp)
        if quick:
            generate(root / "dataset", **TINY_DATA)
            project = make_project(root / "project", root / "dataset", TINY, repo=REPO)
            batch = {"per_class": 4, "size": TINY_DATA["size"], "classes": TINY_DATA["classes"]}
        else:
            generate(root / "dataset")  # the built-in dataset: 6 classes x 80 tiles of 64 px
            project = make_project(root / "project", root / "dataset", repo=REPO)
            batch = {"per_class": 20, "size": 64, "classes": 6}
        batches = _BATCHES[:1] if quick else _BATCHES
        steps = _demo(project, batch, batches)
        noop = [
            (_dvc(project, "repro").seconds, _histoflow(project, "run").seconds)
            for _ in range(repeats)
        ]

    stages = [s for s in steps if s.startswith("stage ")]
    total = sum(m.seconds for m in steps.values())
    peak = max(m.peak_rss_mib for m in steps.values())
    size = "tiny test data and params" if quick else "6 classes x 80 tiles of 64 px, params.yaml"
    figures = [
        {
            "figure": "make demo pipeline, end to end",
            "unit": "s",
            "samples": [total],
            "notes": f"{size}; 7 stages, registration, {len(batches)} batch(es) monitored; run once",
        },
        {
            "figure": "make demo pipeline, peak memory (largest process)",
            "unit": "MiB",
            "samples": [peak],
            "notes": "largest single process of any step",
        },
        {
            "figure": "make demo pipeline, peak memory (process tree)",
            "unit": "MiB",
            "samples": [max(m.tree_peak_mib for m in steps.values())],
            "notes": "sum over a step's processes, sampled every 100 ms",
        },
    ]
    figures += [
        {
            "figure": f"make demo: {name}",
            "unit": "s",
            "samples": [steps[name].seconds],
            "notes": f"peak {steps[name].peak_rss_mib:.0f} MiB",
        }
        for name in [*stages, "histoflow run (stages cached)", "monitor new batches"]
    ]
    encoder, fusion = steps["stage train_encoder"].seconds, steps["stage train_fusion"].seconds
    figures += [
        {
            "figure": "train_encoder vs train_fusion on cached embeddings (same data)",
            "unit": "x longer",
            "samples": [encoder / fusion],
            "notes": (
                "tiny test recipes"
                if quick
                else "params.yaml: encoder 8 epochs, fusion up to 60 with early stopping"
            ),
        },
        {
            "figure": "no-op `dvc repro` (everything cached)",
            "unit": "s",
            "samples": [d for d, _ in noop],
        },
        {
            "figure": "no-op `histoflow run` (everything cached)",
            "unit": "s",
            "samples": [h for _, h in noop],
            "notes": (
                "Prefect flow with a temporary local server; one `dvc status`, no stage run; "
                "the model is unchanged, so nothing is registered"
            ),
        },
        {
            "figure": "Prefect + MLflow overhead over plain `dvc repro`",
            "unit": "s",
            "samples": [h - d for d, h in noop],
            "notes": "no-op `histoflow run` minus no-op `dvc repro`, same project, same repeat",
        },
    ]
    return figures


def _demo(project: Path, batch: dict, batches: tuple) -> dict[str, Measurement]:
    """``make demo``'s steps after installation, each measured: {step name: Measurement}."""
    steps = {}
    for stage in stage_order(project):
        steps[f"stage {stage}"] = _dvc(project, "repro", "--single-item", stage)
    steps["histoflow run (stages cached)"] = _histoflow(project, "run")
    monitor = []
    for name, seed, shift in batches:
        out = f"monitoring/inbox/{name}"
        monitor.append(
            _histoflow(
                project,
                *("data", "synth", "--out", out, "--seed", str(seed), "--overwrite"),
                *("--per-class", str(batch["per_class"]), "--size", str(batch["size"])),
                *("--classes", str(batch["classes"]), "--stain-shift", str(shift)),
            )
        )
    monitor.append(_histoflow(project, "monitor", "--inbox"))  # every new batch, one command
    steps["monitor new batches"] = combined(monitor)
    return steps


def _dvc(project: Path, *args: str) -> Measurement:
    # The benchmark measures the dvc command line itself, as a user runs it.
    return measure([str(BIN / "dvc"), *args], project)


def _histoflow(project: Path, *args: str) -> Measurement:
    return measure([str(BIN / "histoflow"), *args], project)


if __name__ == "__main__":
    sys.exit(main(__doc__))
