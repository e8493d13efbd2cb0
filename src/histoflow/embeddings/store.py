"""The feature store ``embed`` writes and ``train_fusion``, ``evaluate`` and ``reference`` read.

:class:`SafetensorsStream` writes the safetensors header first (all shapes are known), then
each tensor's rows at their offsets with positional writes, batch by batch: the file never
exists whole in memory, and readers (``safe_open``) see an ordinary safetensors file.

:class:`FeatureStore` reads it back row range by row range (what ``train_fusion``, ``evaluate``
and ``reference`` use): positional reads (``os.pread``) of the rows asked for, never the whole
file, so a stage's memory does not grow with the number of tiles. Not a memory map on purpose:
pages of a map that a shuffled epoch touches stay in the process's resident set until the
kernel needs them, which reads as growth in every measurement; a read leaves them in the page
cache, where they cost nothing. :func:`load_features` loads a whole (small) store at once.

Size on disk per tile, float16: caption tokens ``max_text_tokens x text width`` (64 x 384 x 2 =
48 KiB at the defaults, the bulk), image tokens ``token_grid^2 x encoder width`` (16 x 512 x 2
= 16 KiB for a resnet18 at grid 4), the pooled image embedding (1 KiB) and the caption mask (64
B): about 65 KiB, 6.3 GiB per 100,000 tiles. Caption tokens are kept per token (not pooled)
because the fusion network cross-attends to them; they are float16 because the text encoder's
float32 outputs lose nothing the classifier measures at half precision.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import safe_open

from histoflow.data.manifest import read_manifest

if TYPE_CHECKING:
    import pandas as pd
    import torch

__all__ = [
    "FEATURES_FILE",
    "INDEX_FILE",
    "FeatureStore",
    "SafetensorsStream",
    "TensorRows",
    "feature_dims",
    "load_features",
]

_DTYPES = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32", np.dtype(np.bool_): "BOOL"}
_NUMPY = {code: dtype for dtype, code in _DTYPES.items()}
FEATURES_FILE = "features.safetensors"  # float16 tensors, one row per image
INDEX_FILE = "index.csv"  # the manifest rows in the same order, with their captions


class SafetensorsStream:
    """A safetensors file whose tensors are filled row range by row range.

    Args:
        path: the file to create (truncated to its final size at once).
        tensors: name -> (numpy dtype, shape); row ``i`` of a tensor is ``tensor[i]``.
        metadata: string metadata stored in the header.
    """

    def __init__(
        self, path: Path, tensors: dict[str, tuple[np.dtype, tuple[int, ...]]], metadata: dict
    ):
        header: dict = {}
        self._layout: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = {}
        offset = 0
        for name, (dtype, shape) in tensors.items():
            dtype = np.dtype(dtype)
            nbytes = math.prod(shape) * dtype.itemsize
            header[name] = {
                "dtype": _DTYPES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            self._layout[name] = (offset, dtype, tuple(shape))
            offset += nbytes
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(self._fd, struct.pack("<Q", len(raw)) + raw)
        self._data = 8 + len(raw)
        os.ftruncate(self._fd, self._data + offset)

    def write(self, name: str, start: int, rows: np.ndarray) -> None:
        """Write ``rows`` (n, *shape[1:]) as rows ``start .. start + n`` of tensor ``name``."""
        offset, dtype, shape = self._layout[name]
        rows = np.ascontiguousarray(rows, dtype=dtype)
        if rows.shape[1:] != shape[1:] or start + len(rows) > shape[0]:
            raise ValueError(f"{name}: rows {rows.shape} at {start} do not fit {shape}")
        row_bytes = math.prod(shape[1:]) * dtype.itemsize
        os.pwrite(self._fd, rows.tobytes(), self._data + offset + start * row_bytes)

    def close(self) -> None:
        """Flush the file to disk and close it."""
        os.fsync(self._fd)
        os.close(self._fd)

    def __enter__(self) -> SafetensorsStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_features(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], pd.DataFrame]:
    """The cached tensors, their metadata, and the index table of an ``embed`` output folder."""
    path = Path(folder) / FEATURES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `histoflow stage embed` first")
    with safe_open(path, framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        meta = fh.metadata()
    return tensors, meta, read_manifest(Path(folder) / INDEX_FILE)


class FeatureStore:
    """An ``embed`` output folder read row by row: the index in memory, the tensors on disk.

    Args:
        folder: the ``embed`` output folder (``features.safetensors`` and ``index.csv``).

    Attributes:
        index: the manifest rows with their captions, aligned with the tensors' rows.
        meta: the string metadata ``embed`` stored (text model, token grid, captioner...).
        shapes: tensor name -> its full shape.

        columns: the index columns to read (None: all); the rest (captions: hundreds of bytes
            per tile) stay on disk.

    Raises:
        FileNotFoundError: the folder holds no feature store.
    """

    def __init__(self, folder: Path, columns: Collection[str] | None = None):
        self._fd = -1  # closed until opened below
        path = Path(folder) / FEATURES_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `histoflow stage embed` first")
        self.path = path
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        self.meta: dict[str, str] = header.pop("__metadata__", None) or {}
        self._data = 8 + size
        self._layout = {
            name: (info["data_offsets"][0], _NUMPY[info["dtype"]], tuple(info["shape"]))
            for name, info in header.items()
        }
        self.shapes = {name: shape for name, (_, _, shape) in self._layout.items()}
        self.index = read_manifest(Path(folder) / INDEX_FILE, columns)
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return len(self.index)

    def read(self, name: str, rows) -> np.ndarray:
        """Rows ``rows`` (any order, repeats allowed) of tensor ``name``: (len(rows), *shape[1:]).

        Sorted runs of consecutive rows are read with one positional read each, so a slice or
        a sorted selection costs a few reads and a shuffled batch one read per row.
        """
        offset, dtype, shape = self._layout[name]
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), *shape[1:]), dtype)
        if not len(rows):
            return out
        if rows.min() < 0 or rows.max() >= shape[0]:
            raise IndexError(f"{self.path}: rows outside 0..{shape[0] - 1} of {name}")
        row_bytes = math.prod(shape[1:]) * dtype.itemsize
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1  # where a run of +1 steps ends
        for run in np.split(np.arange(len(rows)), breaks):
            first, n = int(sorted_rows[run[0]]), len(run)
            raw = os.pread(self._fd, n * row_bytes, self._data + offset + first * row_bytes)
            out[order[run]] = np.frombuffer(raw, dtype).reshape(n, *shape[1:])
        return out

    def tensor(self, name: str) -> TensorRows:
        """Tensor ``name`` as an array-like whose rows are read only when indexed."""
        return TensorRows(self, name)

    def rows(self, rows) -> dict[str, np.ndarray]:
        """The fusion inputs of ``rows``: ``image_tokens``, ``text_tokens``, ``text_mask``."""
        return {
            name: self.read(name, rows) for name in ("image_tokens", "text_tokens", "text_mask")
        }

    def dims(self) -> dict[str, int]:
        """:func:`feature_dims` of this store, from its header."""
        return _dims(self.shapes["image_tokens"], self.shapes["text_tokens"])

    def close(self) -> None:
        """Close the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # a stage that returns without closing does not leak the file
        self.close()

    def __getstate__(self) -> dict:  # a DataLoader worker reopens the file
        state = dict(self.__dict__)
        state["_fd"] = -1
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._fd = os.open(self.path, os.O_RDONLY)


def feature_dims(tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """The widths a classifier on these features needs.

    Returns:
        ``image_dim``, ``text_dim`` and ``image_tokens``: keyword arguments of
        :meth:`histoflow.models.fusion.FusionConfig.from_params`.
    """
    return _dims(tuple(tensors["image_tokens"].shape), tuple(tensors["text_tokens"].shape))


def _dims(image_tokens: tuple[int, ...], text_tokens: tuple[int, ...]) -> dict[str, int]:
    return {
        "image_dim": int(image_tokens[2]),
        "text_dim": int(text_tokens[2]),
        "image_tokens": int(image_tokens[1]),
    }


class TensorRows:
    """One tensor of an open :class:`FeatureStore`, read row by row on indexing.

    ``rows[i]`` for a slice, an array of row numbers or a boolean mask returns those rows as a
    numpy array (:meth:`FeatureStore.read`); ``len`` and ``shape`` come from the header. What
    a stage holds is then what it asked for, not the tensor (the audit: 1 KiB per tile).
    """

    def __init__(self, store: FeatureStore, name: str):
        self._store, self._name = store, name
        _, self.dtype, self.shape = store._layout[name]

    def __len__(self) -> int:
        """Number of rows."""
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        """The rows asked for: a slice, row numbers or a boolean mask."""
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(self.shape[0]))
        rows = np.asarray(rows)
        if rows.dtype == np.bool_:
            rows = np.flatnonzero(rows)
        return self._store.read(self._name, rows)
