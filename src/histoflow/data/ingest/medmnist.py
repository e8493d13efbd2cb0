"""Import a MedMNIST ``.npz``: ``{train,val,test}_{images,labels}`` arrays, written as PNGs.

Images are streamed from the compressed archive in chunks, so a large set never sits in
memory whole. Class names come from the caller, else from a ``label_names`` or
``class_names`` array in the file, else ``class_0``, ``class_1``...
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from histoflow.data.ingest._common import Item, Plan, safe_name
from histoflow.data.ingest.sources import DataError

__all__ = ["plan"]

_CHANNELS = ((), (1,), (3,))  # image shape after (H, W): greyscale or RGB
_CHUNK = 512  # images per read from an npz member: 512 * 96*96*3 B = 14 MB


def plan(src: Path, class_names: Sequence[str] | None) -> Plan:
    """The images of every split in the npz ``src``, each under its class's folder.

    Args:
        src: A MedMNIST ``.npz`` file.
        class_names: Class names by label index, or None for those stored in the file.

    Raises:
        DataError: ``src`` is not a readable npz, holds no split's arrays, has labels that are
            not single non-negative integers, or has more labels than class names.
    """
    try:
        # npz members cannot be memory-mapped: only labels and names are loaded here.
        with np.load(src, mmap_mode="r") as npz:
            keys = set(npz.files)
            splits = [s for s in ("train", "val", "test") if {f"{s}_images", f"{s}_labels"} <= keys]
            raw = {s: npz[f"{s}_labels"] for s in splits}
            stored = next(
                (npz[k].tolist() for k in ("label_names", "class_names") if k in keys), []
            )
    except (OSError, ValueError, TypeError, zipfile.BadZipFile) as exc:
        raise DataError(f"{src}: not a readable MedMNIST .npz file: {exc}") from None
    labels = {s: _labels(v, src, s) for s, v in raw.items()}
    if not splits:
        raise DataError(
            f"no images found in {src}: looked for train_images/train_labels, val_images/"
            f"val_labels, test_images/test_labels arrays; it holds {sorted(keys)}"
        )
    n_classes = max((int(v.max()) + 1 for v in labels.values() if len(v)), default=0)
    names = [str(n) for n in class_names or stored] or [f"class_{i}" for i in range(n_classes)]
    if len(names) < n_classes:
        raise DataError(
            f"{src}: labels go up to {n_classes - 1}, so {n_classes} class names are needed; "
            f"got {len(names)}"
        )
    return sum(map(len, labels.values())), _items(src, labels, names), []


def _labels(labels: np.ndarray, src: Path, split: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]  # MedMNIST stores (N, 1)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
        raise DataError(
            f"{src}: {split}_labels must be non-negative integers of shape (N,) or (N, 1), got "
            f"{labels.dtype} {labels.shape} (multi-label MedMNIST sets are not supported)"
        )
    return np.asarray(labels, dtype=np.int64)


def _items(src: Path, labels: dict[str, np.ndarray], names: list[str]) -> Iterator[Item]:
    with zipfile.ZipFile(src) as archive:
        for split, targets in labels.items():
            index = 0
            for chunk in _npy_chunks(archive, f"{split}_images.npy", len(targets)):
                for image in chunk[..., 0] if chunk.shape[3:] == (1,) else chunk:  # (H, W[, 3])
                    label = names[targets[index]]
                    rel = f"{safe_name(label)}/{split}_{index:06d}.png"
                    yield image, rel, {"label": label, "split": split}
                    index += 1


def _npy_chunks(archive: zipfile.ZipFile, member: str, rows: int) -> Iterator[np.ndarray]:
    """Yield an npz image member ``_CHUNK`` rows at a time, decompressing it as a stream."""
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        if fortran_order or dtype != np.uint8 or shape[:1] != (rows,) or shape[3:] not in _CHANNELS:
            raise DataError(
                f"{archive.filename}: {member} must be a C-ordered uint8 (N,H,W) or (N,H,W,3) "
                f"array with one image per label ({rows}), got {dtype} {shape}"
            )
        row_bytes = math.prod(shape[1:])
        for start in range(0, rows, _CHUNK):
            n = min(_CHUNK, rows - start)
            buffer = stream.read(n * row_bytes)
            if len(buffer) != n * row_bytes:
                raise DataError(f"{archive.filename}: {member} is truncated")
            yield np.frombuffer(buffer, np.uint8).reshape(n, *shape[1:])
