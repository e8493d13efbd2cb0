"""Importing a CSV file of path,label rows and any other columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histoflow.data.ingest import import_dataset
from histoflow.data.ingest.sources import DataError, read_source


def _image(path, value=128, size=8, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path, format=fmt)
    return path


def _pixels(path):
    return np.asarray(Image.open(path))


def test_csv_keeps_columns_and_renames_clashes(tmp_path):
    _image(tmp_path / "raw" / "one" / "img (1).png", 1)
    _image(tmp_path / "raw" / "two" / "img (1).png", 2)
    absolute = _image(tmp_path / "elsewhere" / "ünï.jpg", 3)
    csv = tmp_path / "raw" / "labels.csv"
    pd.DataFrame(
        {
            "path": ["one/img (1).png", "two/img (1).png", str(absolute)],
            "label": ["tumor", "tumor", "normal"],
            "split": ["train", "test", "train"],
            "patient_id": ["p1", "p2", "p3"],
            "site": ["s1", "s2", "s1"],
        }
    ).to_csv(csv, index=False)
    import_dataset("csv", csv, tmp_path / "out", progress=False)
    table = read_source(tmp_path / "out")
    assert table["path"].tolist() == ["normal/ünï.jpg", "tumor/img (1).png", "tumor/img (1)_1.png"]
    assert table["patient_id"].tolist() == ["p3", "p1", "p2"]
    assert table["split"].tolist() == ["train", "train", "test"]
    assert table["site"].tolist() == ["s1", "s1", "s2"]
    assert _pixels(tmp_path / "out" / "tumor" / "img (1)_1.png")[0, 0, 0] == 2


def test_csv_errors_name_the_line_and_the_column(tmp_path):
    _image(tmp_path / "a.png")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\na.png,x\nmissing.png,y\n")
    with pytest.raises(DataError, match=r"line 3: image 'missing.png' not found"):
        import_dataset("csv", csv, tmp_path / "out", progress=False)
    csv.write_text("file,label\na.png,x\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['path'\]"):
        import_dataset("csv", csv, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # failed imports leave nothing behind
