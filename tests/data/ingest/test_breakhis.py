"""Importing BreakHis: labels, patients and magnifications from file names."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from histoflow.data.ingest import import_dataset
from histoflow.data.ingest.sources import read_source


def _image(path, value=128, size=8, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path, format=fmt)
    return path


def _summary(out):
    return json.loads((out / "import.json").read_text())


def test_breakhis_parses_names_and_reports_the_rest(tmp_path):
    src = tmp_path / "BreaKHis_v1"
    names = [
        "benign/adenosis/SOB_B_A-14-22549AB-40-001.png",
        "benign/adenosis/SOB_B_A-14-22549AB-100-002.png",
        "malignant/DC/SOB_M_DC-14-2523-400-010.png",
        "malignant/MC/SOB_M_MC-14-13418DE-200-003.png",
    ]
    for name in names:
        _image(src / name)
    _image(src / "malignant" / "DC" / "scan 1.png")
    with pytest.warns(UserWarning, match=r"skipped 1 file.*scan 1\.png"):
        import_dataset("breakhis", src, tmp_path / "out", progress=False)
    table = read_source(tmp_path / "out").set_index("path")
    row = table.loc["ductal_carcinoma/SOB_M_DC-14-2523-400-010.png"]
    assert (row["label"], row["binary_label"]) == ("ductal_carcinoma", "malignant")
    assert (row["patient_id"], row["magnification"]) == ("14-2523", "400x")
    assert table["label"].value_counts().to_dict() == {
        "adenosis": 2,
        "ductal_carcinoma": 1,
        "mucinous_carcinoma": 1,
    }
    assert set(table.loc[table["label"] == "adenosis", "patient_id"]) == {"14-22549AB"}
    assert sorted(table["magnification"]) == ["100x", "200x", "400x", "40x"]
    assert set(table["binary_label"]) == {"benign", "malignant"}
    summary = _summary(tmp_path / "out")
    assert (summary["n_images"], summary["n_skipped"]) == (4, 1)
    assert summary["skipped"] == ["malignant/DC/scan 1.png"]
