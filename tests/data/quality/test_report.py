"""The validation report on a tiny real dataset: real QC, real GX, real PNGs on disk."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histoflow.config import ValidateConfig
from histoflow.data.quality.contract import check_contract
from histoflow.data.quality.features import image_features
from histoflow.data.quality.report import write_validation_report

CLASSES = ["normal", "tumor"]
# Greyscale (mode L), so a contract error lists it; its name breaks unescaped HTML.
ODD = "tumor/odd <&> naïve é.png"
SOFT = "normal/soft.png"  # one flat colour: blur 0, so flagged and excluded


def _dataset(root: Path) -> pd.DataFrame:
    """14 files, one patient each: 10 good tiles, a blurred, a greyscale, a corrupt, a vanished."""
    rng = np.random.default_rng(0)
    paths = [f"{label}/tile_{i}.png" for label in CLASSES for i in range(5)]
    paths += [SOFT, ODD, "tumor/corrupt.png", "tumor/vanished.png"]
    for rel in paths:
        file = root / rel
        file.parent.mkdir(parents=True, exist_ok=True)
        # Pink-purple noise reads as sharp tissue; each tile differs, so no duplicates.
        pixels = rng.integers(0, 255, (32, 32, 3)) * [0.5, 0.3, 0.5] + [120, 40, 100]
        Image.fromarray(pixels.astype(np.uint8)).save(file)
    Image.new("RGB", (32, 32), (200, 120, 180)).save(root / SOFT)
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(root / ODD)
    (root / "tumor/corrupt.png").write_bytes(b"\x89PNG not really")

    table = pd.DataFrame([image_features(root / p) for p in paths])
    table.insert(0, "path", paths)
    table.insert(1, "label", [p.split("/")[0] for p in paths])
    table.insert(2, "split", [("train", "val", "test")[i % 3] for i in range(len(paths))])
    table.insert(3, "patient_id", [f"P{i:02d}" for i in range(len(paths))])
    (root / "tumor/vanished.png").unlink()  # measured, then gone before the montage
    return table


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    out = tmp_path_factory.mktemp("reports") / "validate"
    table = _dataset(root)
    result = check_contract(table, ValidateConfig(min_size=16), classes=CLASSES)
    excluded = sorted(result.flagged(["blurred", "blank"]))
    page = write_validation_report(
        table, result, out, data_root=root, classes=CLASSES, excluded=excluded, max_montage=4
    )
    return page, out, table, result, excluded


def test_report_files_are_written(report):
    page, out, *_ = report
    assert page == out / "report.html"
    names = {p.name for p in out.iterdir()}
    assert names == {"report.html", "results.json", "montage_normal.png", "montage_tumor.png"}
    with Image.open(out / "montage_tumor.png") as montage:
        # 4 tiles of 64 px in a 2 x 2 grid with a 2 px gap.
        assert montage.size == (130, 130)


def test_report_names_failures_and_escapes_file_names(report):
    page, _, _, result, excluded = report
    text = page.read_text(encoding="utf-8")
    assert "FAILED" in text
    assert {v.check for v in result.errors} == {"unreadable", "mode"}
    assert excluded == [SOFT]
    for v in result.violations:
        assert html.escape(v.message) in text
    assert html.escape(ODD) in text
    assert "<&>" not in text
    assert text.count('<img src="data:image/png;base64,') == 3  # histograms + 2 montages


def test_results_json_has_counts_and_exclusions(report):
    _, out, table, result, _ = report
    data = json.loads((out / "results.json").read_text())
    assert data["success"] is False
    tumor = table.loc[table["label"] == "tumor", "split"].value_counts()
    assert data["counts"]["tumor"] == {**tumor.to_dict(), "total": 8}
    assert data["excluded"] == [{"path": SOFT, "checks": ["blurred"]}]
    assert len(data["expectations"]) == result.statistics["evaluated_expectations"]
