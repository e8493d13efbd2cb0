"""Synthetic stand-ins shaped like each recipe's real dataset, for offline runs and tests.

Each stand-in has the real dataset's task (classes), its grouping columns and its look (H&E
tiles, or grey scans on a black background that crop-to-foreground should remove), drawn from
the deterministic generator in :mod:`histoflow.data.synthetic`. They check that a recipe runs
end to end; they say nothing about how well it does on the real data.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from histoflow.data.outdir import check_output, dataset_dir
from histoflow.data.synthetic import generate

__all__ = ["STANDINS", "make_standin"]

# kind -> (synthetic classes used, their labels in the stand-in); None = keep the names.
_LABELS: dict[str, dict[str, str] | None] = {
    "brats_path": None,
    # Labelled like `histoflow data import breakhis`: the subtype, plus binary_label.
    "breakhis": {"normal_mucosa": "fibroadenoma", "tumour": "ductal_carcinoma"},
    "brain_mri": {
        "adipose": "glioma_tumor",
        "stroma": "meningioma_tumor",
        "lymphocytes": "no_tumor",
        "normal_mucosa": "pituitary_tumor",
    },
    "stroke": {"stroma": "normal", "tumour": "stroke"},
}
STANDINS = tuple(_LABELS)
_BINARY = {"fibroadenoma": "benign", "ductal_carcinoma": "malignant"}
_EXTRA_COLUMNS = {
    "brats_path": ["magnification"],
    "breakhis": ["magnification", "binary_label"],
    "brain_mri": [],
    "stroke": ["modality"],
}
_MAGNIFICATIONS = ("40x", "100x", "200x", "400x")
_MODALITIES = ("CT", "MR")


def make_standin(
    kind: str,
    out: str | Path,
    *,
    per_class: int = 24,
    size: int = 64,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write the stand-in dataset ``kind`` with a ``manifest.csv``; returns the manifest path.

    ``brats_path``: all 8 synthetic H&E tissue classes. ``breakhis``: two H&E subtypes with
    ``binary_label`` benign / malignant, every patient imaged at 40x, 100x, 200x and 400x
    (``magnification``), as ``histoflow data import breakhis`` writes them. ``brain_mri``:
    4 classes of grey scans centred on a black background, at varying scale. ``stroke``: normal
    vs stroke grey scans, each patient scanned by CT or MR (``modality`` column).

    Like :func:`~histoflow.data.synthetic.generate`, it is built beside ``out``, swapped in
    at the end and marked, and ``overwrite`` replaces only a folder histoflow wrote.

    Raises:
        ValueError: for an unknown ``kind``, or an ``out`` that is the current folder, one
            above it, or a project.
        FileExistsError: ``out`` is not empty and ``overwrite`` is False, or histoflow did not
            write all of it.
    """
    if kind not in _LABELS:
        raise ValueError(f"unknown stand-in {kind!r}; choose one of {', '.join(STANDINS)}")
    out = Path(out)
    check_output(out, overwrite=overwrite)
    labels = _LABELS[kind]
    with (
        tempfile.TemporaryDirectory() as tmp,
        dataset_dir(out, by=f"histoflow data standin {kind}") as build,
    ):
        src = Path(tmp) / "src"
        # BreakHis images every patient at 4 magnifications: 4 images (or more) per patient.
        patients = max(1, per_class // 4) if kind == "breakhis" else None
        generate(
            src,
            classes=8,
            per_class=per_class,
            size=size,
            seed=seed,
            patients_per_class=patients,
        )
        with open(src / "manifest.csv", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if labels is None or r["label"] in labels]
        rng = np.random.default_rng(seed)
        columns = ["path", "label", "patient_id", "site", *_EXTRA_COLUMNS[kind]]
        seen: dict[str, int] = {}  # images so far per patient
        table = []
        for row in rows:
            label = labels[row["label"]] if labels else row["label"]
            rel = f"{label}/{Path(row['path']).name}"
            (build / label).mkdir(parents=True, exist_ok=True)
            image = Image.open(src / row["path"]).convert("RGB")
            patient = f"{label}_{row['patient_id']}"
            if kind in ("brain_mri", "stroke"):
                image = _scan(image, rng)
            image.save(build / rel)
            extra = [row["magnification"]]
            if kind == "breakhis":  # each patient imaged at every magnification in turn
                seen[patient] = seen.get(patient, -1) + 1
                extra = [_MAGNIFICATIONS[seen[patient] % len(_MAGNIFICATIONS)], _BINARY[label]]
            elif kind == "stroke":  # one scanner per patient
                extra = [_MODALITIES[int(row["patient_id"].lstrip("P")) % len(_MODALITIES)]]
            elif kind == "brain_mri":
                extra = []
            table.append([rel, label, patient, row["site"], *extra])
        with open(build / "manifest.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            writer.writerows(sorted(table))
    return out / "manifest.csv"


def _scan(tile: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A grey 'scan': the tile's luminance as a disc-shaped head on a larger black field."""
    size = tile.width
    grey = np.asarray(tile.convert("L"), dtype=np.float32)
    canvas = np.zeros((size * 2, size * 2), dtype=np.float32)
    scale = rng.uniform(0.7, 1.3)
    side = int(size * scale)
    head = np.asarray(Image.fromarray(grey.astype(np.uint8)).resize((side, side)), np.float32)
    yy, xx = np.mgrid[:side, :side]
    head *= ((yy - side / 2) ** 2 + (xx - side / 2) ** 2) <= (side / 2) ** 2  # round head
    y0, x0 = rng.integers(0, 2 * size - side + 1, size=2)
    canvas[y0 : y0 + side, x0 : x0 + side] = head
    return Image.fromarray(canvas.astype(np.uint8)).convert("RGB")
