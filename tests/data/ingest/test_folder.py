"""Importing an image folder (class folders, optionally under split folders)."""

from __future__ import annotations

import json
import os
from pathlib import Path

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


def _summary(out):
    return json.loads((out / "import.json").read_text())


def test_folder_keeps_names_bytes_and_nested_paths(tmp_path):
    src = tmp_path / "src"
    jpeg = _image(src / "glioma" / "gg (10).jpg", fmt="JPEG")
    _image(src / "glioma" / "ünï code.png")
    _image(src / "glioma" / "case 1" / "deep.tif")
    _image(src / "no_tumor" / "A.PNG")
    (src / "no_tumor" / "notes.txt").write_text("not an image")
    _image(src / "no_tumor" / ".hidden" / "x.png")
    (src / ".DS_Store").write_bytes(b"\0")
    with pytest.warns(UserWarning, match=r"skipped 1 file.*notes\.txt"):
        manifest = import_dataset("folder", src, tmp_path / "out", progress=False)
    out = manifest.parent
    table = read_source(out)
    assert table["path"].tolist() == [
        "glioma/case 1/deep.tif",
        "glioma/gg (10).jpg",
        "glioma/ünï code.png",
        "no_tumor/A.PNG",
    ]
    assert table["label"].tolist() == ["glioma"] * 3 + ["no_tumor"]
    assert (table["split"] == "").all()
    assert "split" not in pd.read_csv(manifest).columns  # no split folders, no split column
    assert (out / "glioma" / "gg (10).jpg").read_bytes() == jpeg.read_bytes()  # copied as is
    summary = _summary(out)
    assert (summary["n_images"], summary["n_skipped"]) == (4, 1)
    assert summary["classes"] == {"glioma": 3, "no_tumor": 1}


def test_folder_with_split_folders_disambiguates_repeated_names(tmp_path):
    src = tmp_path / "src"
    _image(src / "Training" / "a" / "x.png", 10)
    _image(src / "Testing" / "a" / "x.png", 20)
    _image(src / "Training" / "b" / "y.png")
    _image(src / "valid" / "b" / "z.png")
    import_dataset("folder", src, tmp_path / "out", progress=False)
    table = read_source(tmp_path / "out").set_index("path")
    assert table["split"].to_dict() == {
        "b/y.png": "train",
        "b/z.png": "val",
        "test/a/x.png": "test",
        "train/a/x.png": "train",
    }
    assert table["label"].tolist() == ["b", "b", "a", "a"]
    assert _pixels(tmp_path / "out" / "test" / "a" / "x.png")[0, 0, 0] == 20

    _image(src / "c" / "w.png")  # a class folder beside split folders is ambiguous
    with pytest.raises(DataError, match="mixes split folders"):
        import_dataset("folder", src, tmp_path / "out2", progress=False)


def test_a_file_name_that_is_not_utf8_is_skipped_and_named(tmp_path):
    src = tmp_path / "src"
    _image(src / "a" / "ok.png")
    _image(src / "b" / "ok.png")
    _image(Path(os.fsdecode(os.fsencode(src / "a") + b"/caf\xe9.png")))  # Latin-1 bytes
    with pytest.warns(UserWarning, match=r"a/caf\\xe9.png \(file name not UTF-8"):
        manifest = import_dataset("folder", src, tmp_path / "out", progress=False)
    assert read_source(manifest.parent)["path"].tolist() == ["a/ok.png", "b/ok.png"]
    assert _summary(manifest.parent)["skipped"] == [
        "a/caf\\xe9.png (file name not UTF-8: rename it)"
    ]
