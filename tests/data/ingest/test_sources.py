"""Reading image folders and CSV manifests, and assigning patient-grouped splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histoflow.data.ingest.sources import (
    DataError,
    assign_splits,
    read_source,
    split_origin,
    unlisted_images,
)


def _image(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def test_class_folder_layout_with_awkward_names(tmp_path):
    _image(tmp_path / "glioma" / "gg (10).jpg")
    _image(tmp_path / "glioma" / "ünï code.png")
    _image(tmp_path / "no_tumor" / "a.png")
    (tmp_path / "no_tumor" / "notes.txt").write_text("not an image")
    _image(tmp_path / "no_tumor" / ".hidden" / "x.png")
    table = read_source(tmp_path)
    assert table["path"].tolist() == ["glioma/gg (10).jpg", "glioma/ünï code.png", "no_tumor/a.png"]
    assert table["label"].tolist() == ["glioma", "glioma", "no_tumor"]
    assert (table["split"] == "").all()
    assert table["patient_id"].nunique() == 3  # no patient ids: each image stands alone


def test_split_folder_layout_gets_val_carved_from_train(tmp_path):
    for i in range(10):
        _image(tmp_path / "Training" / "a" / f"{i}.png")
        _image(tmp_path / "Training" / "b" / f"{i}.png")
    _image(tmp_path / "Testing" / "a" / "t.png")
    _image(tmp_path / "Testing" / "b" / "t.png")
    table = read_source(tmp_path)
    assert set(table["split"]) == {"train", "test"}
    split = assign_splits(table, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert set(split["split"]) == {"train", "val", "test"}
    assert (split.loc[table["split"] == "test", "split"] == "test").all()


def _carve(table, seed=0):
    return assign_splits(table, val_fraction=0.2, test_fraction=0.2, seed=seed)


def test_train_only_folders_get_val_and_test_carved_by_patient(tmp_path):
    for label in ("a", "b"):
        for i in range(10):
            _image(tmp_path / "train" / label / f"{i}.png")
    table = read_source(tmp_path)
    number = table["path"].str.extract(r"/(\d+)\.png$")[0].astype(int)
    table["patient_id"] = table["label"] + (number // 2).astype(str)  # 5 patients per class
    split = _carve(table)
    assert split_origin(table["split"], split["split"]) == {
        "train": "data",
        "val": "carved",
        "test": "carved",
    }
    assert (split.groupby("patient_id")["split"].nunique() == 1).all()  # grouped by patient
    for label, rows in split.groupby("label"):
        assert set(rows["split"]) == {"train", "val", "test"}, label  # stratified
    pd.testing.assert_frame_equal(split, _carve(table))
    assert not split["split"].equals(_carve(table, seed=1)["split"])


def test_given_splits_are_kept_and_only_missing_ones_carved(tiny_data):
    table = read_source(tiny_data)
    patients = sorted(table["patient_id"].unique())
    table["split"] = table["patient_id"].map(
        {p: "val" if i % 4 == 0 else "train" for i, p in enumerate(patients)}
    )
    split = _carve(table)
    assert (split.loc[table["split"] == "val", "split"] == "val").all()  # val kept as given
    assert split_origin(table["split"], split["split"])["test"] == "carved"
    assert set(split["split"]) == {"train", "val", "test"}

    no_train = table.assign(split=table["split"].replace({"train": "test"}))
    assert _carve(no_train)["split"].equals(no_train["split"])  # nothing to carve from
    assert split_origin(no_train["split"], no_train["split"])["train"] == "none"


def test_unlisted_images_only_with_a_manifest(tmp_path):
    _image(tmp_path / "a" / "1.png")
    _image(tmp_path / "a" / ".hidden.png")
    assert unlisted_images(tmp_path, []) == []  # the folder layout lists itself
    (tmp_path / "manifest.csv").write_text("path,label\n./a/1.png,a\n")
    assert unlisted_images(tmp_path, read_source(tmp_path)["path"]) == []
    _image(tmp_path / "b" / "2.png")
    assert unlisted_images(tmp_path, read_source(tmp_path)["path"]) == ["b/2.png"]


def test_images_are_found_in_rglob_order_without_hidden_files_or_linked_folders(tmp_path):
    # A file beside a folder of the same stem, names sorting differently as whole paths
    # than folder by folder, hidden entries, a non-image, and a link to a folder.
    for rel in ("a/b.png", "a/b/c.png", "a-b.png", "a/B.TIF", "z/1.jpg", "a/.h.png",
                ".hidden/x.png", "a/notes.txt"):  # fmt: skip
        _image(tmp_path / rel) if rel.endswith(("png", "jpg", "TIF")) else None
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "link").symlink_to(tmp_path / "z", target_is_directory=True)
    (tmp_path / "y.png").symlink_to(tmp_path / "z" / "1.jpg")  # a link to a file counts
    expected = [
        f.relative_to(tmp_path).as_posix()
        for f in sorted(tmp_path.rglob("*"))
        if f.is_file()
        and f.suffix.lower() in {".png", ".jpg", ".tif"}
        and not any(part.startswith(".") for part in f.relative_to(tmp_path).parts)
    ]
    (tmp_path / "manifest.csv").write_text("path,label\n")
    assert unlisted_images(tmp_path, []) == expected
    assert expected == ["a/B.TIF", "a/b/c.png", "a/b.png", "a-b.png", "y.png", "z/1.jpg"]


def test_csv_manifest_paths_relative_to_csv(tmp_path):
    _image(tmp_path / "imgs" / "x.png")
    _image(tmp_path / "imgs" / "y.png")
    pd.DataFrame(
        {
            "path": ["imgs/x.png", "imgs/y.png"],
            "label": ["a", "b"],
            "patient_id": ["p1", "p2"],
            "site": ["s1", "s2"],
        }
    ).to_csv(tmp_path / "manifest.csv", index=False)
    table = read_source(tmp_path)
    assert table["patient_id"].tolist() == ["p1", "p2"]
    assert table["site"].tolist() == ["s1", "s2"]


def test_csv_manifest_without_label_column(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,class\nx.png,a\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['label'\]"):
        read_source(tmp_path)


def test_missing_and_empty_folders_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="does not exist.*histoflow data synth"):
        read_source(tmp_path / "nope")
    with pytest.raises(DataError, match="holds no images.*histoflow data synth"):
        read_source(tmp_path)


def test_assigned_splits_are_grouped_stratified_and_deterministic(tiny_data):
    table = read_source(tiny_data)
    a = assign_splits(table, val_fraction=0.25, test_fraction=0.25, seed=3)
    b = assign_splits(table, val_fraction=0.25, test_fraction=0.25, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert (a.groupby("patient_id")["split"].nunique() == 1).all()
    for label, rows in a.groupby("label"):
        assert set(rows["split"]) == {"train", "val", "test"}, label
    c = assign_splits(table, val_fraction=0.25, test_fraction=0.25, seed=4)
    assert not a["split"].equals(c["split"])


def test_partially_filled_split_column_is_an_error(tmp_path):
    table = pd.DataFrame(
        {"path": ["a", "b"], "label": ["x", "y"], "split": ["train", ""], "patient_id": ["1", "2"]}
    )
    with pytest.raises(DataError, match="filled for some rows"):
        assign_splits(table, val_fraction=0.1, test_fraction=0.2, seed=0)
