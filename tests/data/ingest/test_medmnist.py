"""Importing a MedMNIST .npz, streamed in chunks, as PNGs that round-trip."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from histoflow.data.ingest import import_dataset, medmnist
from histoflow.data.ingest.sources import DataError, read_source


def _pixels(path):
    return np.asarray(Image.open(path))


def test_medmnist_writes_pngs_that_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(medmnist, "_CHUNK", 3)  # stream in chunks that end mid-split
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
