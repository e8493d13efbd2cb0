"""Import PatchCamelyon: ``camelyonpatch_level_2_split_<split>_{x,y}.h5`` pairs, as PNGs.

Each split present (train, valid, test) is read from its HDF5 pair a slab of patches at a
time; label 1 is ``tumor``, 0 ``normal``. PCam is distributed gzipped: gunzip the files first.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from histoflow.data.ingest._common import Item, Plan, require_images
from histoflow.data.ingest.sources import SPLIT_ALIASES, DataError

__all__ = ["plan"]

_CHUNK = 512  # patches per read from an HDF5 dataset: 512 * 96*96*3 B = 14 MB
_NAME = "camelyonpatch_level_2_split_{split}_{part}"


def plan(src: Path) -> Plan:
    """The patches of every split whose HDF5 pair is in the folder ``src``.

    Raises:
        DataError: no pair is there (or only gzipped ones), a file cannot be read, or ``x`` is
            not uint8 (N, 96, 96, 3) as long as ``y``.
    """
    pairs, total = [], 0
    for split in ("train", "valid", "test"):
        x_path, y_path = (src / f"{_NAME.format(split=split, part=p)}.h5" for p in "xy")
        if not (x_path.is_file() or y_path.is_file()):
            continue
        try:
            with h5py.File(x_path, "r") as fx, h5py.File(y_path, "r") as fy:
                total += len(fx["x"])
                if len(fx["x"]) != len(fy["y"]) or fx["x"].dtype != np.uint8 or fx["x"].ndim != 4:
                    raise DataError(
                        f"{x_path}: expected x uint8 (N,96,96,3) as long as y (N,1,1,1)"
                    )
        except (OSError, KeyError) as exc:
            raise DataError(
                f"{src}: PCam {split} needs {x_path.name} with dataset x and "
                f"{y_path.name} with dataset y: {exc}"
            ) from None
        pairs.append((SPLIT_ALIASES[split], x_path, y_path))
    if not pairs:
        gz = sorted(src.glob("camelyonpatch_*.h5.gz")) if src.is_dir() else []
        if gz:
            raise DataError(
                f"{src} holds only gzipped PCam files ({gz[0].name}, ...): gunzip them first, "
                f"e.g. `gunzip {src}/*.h5.gz`"
            )
        require_images([], src, f"{_NAME.format(split='{train,valid,test}', part='{x,y}')}.h5", [])
    return total, _items(pairs), []


def _items(pairs: list[tuple[str, Path, Path]]) -> Iterator[Item]:
    for split, x_path, y_path in pairs:
        with h5py.File(x_path, "r") as fx, h5py.File(y_path, "r") as fy:
            x, y = fx["x"], fy["y"]  # (N, 96, 96, 3) uint8, (N, 1, 1, 1) 0/1
            for start in range(0, len(x), _CHUNK):  # h5py reads only this slab from disk
                images = x[start : start + _CHUNK]
                targets = np.asarray(y[start : start + _CHUNK]).reshape(len(images))
                if not np.isin(targets, (0, 1)).all():
                    raise DataError(f"{y_path}: labels must be 0 (normal) or 1 (tumor)")
                for index, (image, target) in enumerate(zip(images, targets, strict=True), start):
                    label = "tumor" if target == 1 else "normal"
                    rel = f"{label}/{split}_{index:07d}.png"
                    yield image, rel, {"label": label, "split": split}
