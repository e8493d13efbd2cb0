"""Importing PatchCamelyon HDF5 pairs as PNGs."""

from __future__ import annotations

import gzip

import h5py
import numpy as np
import pytest
from PIL import Image

from histoflow.data.ingest import import_dataset, pcam
from histoflow.data.ingest.sources import DataError, read_source


def _pixels(path):
    return np.asarray(Image.open(path))


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
    monkeypatch.setattr(pcam, "_CHUNK", 2)  # read the HDF5 files in slabs of 2, 2, 1
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
