"""Importing public dataset formats into the standard layout that read_source reads."""

from __future__ import annotations

import gzip
import json

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histoflow.data import importers
from histoflow.data.importers import FORMATS, import_dataset
from histoflow.data.sources import DataError, read_source


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


def test_medmnist_writes_pngs_that_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(importers, "_CHUNK", 3)  # stream in chunks that end mid-split
    rng = np.random.default_rng(0)
    grey = {
        s: rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
        for s, n in [("train", 4), ("val", 2), ("test", 2)]
    }
    labels = {"train": [[0], [1], [2], [1]], "val": [[0], [2]], "test": [[1], [1]]}
    npz = tmp_path / "tiny.npz"
    np.savez_compressed(
        npz,
        **{f"{s}_images": a for s, a in grey.items()},
        **{f"{s}_labels": np.array(v, np.uint8) for s, v in labels.items()},
        label_names=np.array(["adipose", "debris", "lymphocytes"]),
    )
    import_dataset("medmnist", npz, tmp_path / "out", progress=False)
    table = read_source(tmp_path / "out")
    assert len(table) == 8
    assert table.groupby("split").size().to_dict() == {"test": 2, "train": 4, "val": 2}
    assert "debris/train_000001.png" in set(table["path"])
    assert (_pixels(tmp_path / "out" / "lymphocytes" / "val_000001.png") == grey["val"][1]).all()

    rgb = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    np.savez(
        npz,
        **{f"{s}_images": rgb for s in ("train", "val", "test")},
        **{f"{s}_labels": np.array([0, 1, 1]) for s in ("train", "val", "test")},
    )
    import_dataset("medmnist", npz, tmp_path / "rgb", progress=False, class_names=["no", "yes"])
    assert (_pixels(tmp_path / "rgb" / "yes" / "test_000002.png") == rgb[2]).all()
    import_dataset("medmnist", npz, tmp_path / "default", progress=False)
    assert set(read_source(tmp_path / "default")["label"]) == {"class_0", "class_1"}
    with pytest.raises(DataError, match="2 class names are needed; got 1"):
        import_dataset("medmnist", npz, tmp_path / "few", progress=False, class_names=["no"])


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


def _pcam(folder, split, n=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
    y = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"camelyonpatch_level_2_split_{split}"
    with h5py.File(f"{stem}_x.h5", "w") as f:
        f.create_dataset("x", data=x, chunks=(1, 96, 96, 3))
    with h5py.File(f"{stem}_y.h5", "w") as f:
        f.create_dataset("y", data=y)
    return x


def test_pcam_round_trips_pixels_deterministically(tmp_path, monkeypatch):
    monkeypatch.setattr(importers, "_CHUNK", 2)  # read the HDF5 files in slabs of 2, 2, 1
    src = tmp_path / "pcam"
    x = _pcam(src, "train")
    _pcam(src, "valid", seed=1)
    import_dataset("pcam", src, tmp_path / "out", progress=False)
    table = read_source(tmp_path / "out").set_index("path")
    assert len(table) == 10
    assert table["split"].value_counts().to_dict() == {"train": 5, "val": 5}
    assert table.loc["tumor/train_0000003.png", "label"] == "tumor"
    assert table.loc["normal/val_0000004.png", "label"] == "normal"
    written = tmp_path / "out" / "tumor" / "train_0000003.png"
    assert (_pixels(written) == x[3]).all()
    import_dataset("pcam", src, tmp_path / "again", progress=False)
    assert (tmp_path / "again" / "tumor" / "train_0000003.png").read_bytes() == written.read_bytes()


def test_pcam_gzipped_only_asks_to_gunzip(tmp_path):
    src = tmp_path / "pcam"
    src.mkdir()
    for part in "xy":
        with gzip.open(src / f"camelyonpatch_level_2_split_test_{part}.h5.gz", "wb") as f:
            f.write(b"not really hdf5")
    with pytest.raises(DataError, match="gunzip"):
        import_dataset("pcam", src, tmp_path / "out", progress=False)


def test_output_folder_rules_and_bad_arguments(tmp_path):
    src = tmp_path / "src"
    _image(src / "a" / "1.png")
    out = tmp_path / "out"
    (out / "b").mkdir(parents=True)
    (out / "old.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        import_dataset("folder", src, out, progress=False)
    assert (out / "old.txt").exists()
    import_dataset("folder", src, out, overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["a", "import.json", "manifest.csv"]
    with pytest.raises(ValueError, match="folder, csv, medmnist, breakhis, pcam") as error:
        import_dataset("tfrecord", src, tmp_path / "x", progress=False)
    assert all(fmt in str(error.value) for fmt in FORMATS)
    with pytest.raises(ValueError, match="overlap"):
        import_dataset("folder", src, src / "imported", progress=False)
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "a" / "readme.md").write_text("")
    with pytest.raises(DataError, match=r"no images found in .*empty: looked for <src>/<class>"):
        import_dataset("folder", empty, tmp_path / "x", progress=False)
