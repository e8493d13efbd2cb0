"""The feature store ``embed`` writes and ``train_fusion``, ``evaluate`` and ``reference`` read.

:class:`SafetensorsStream` writes the safetensors header first (all shapes are known), then
each tensor's rows at their offsets with positional writes, batch by batch: the file never
exists whole in memory, and readers (``safe_open``) see an ordinary safetensors file.
:func:`load_features` reads a store back without importing the image models.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import safe_open

from histoflow.data.manifest import read_manifest

if TYPE_CHECKING:
    import pandas as pd
    import torch

__all__ = ["FEATURES_FILE", "INDEX_FILE", "SafetensorsStream", "feature_dims", "load_features"]

_DTYPES = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32", np.dtype(np.bool_): "BOOL"}
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


def feature_dims(tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """The widths a classifier on these features needs.

    Returns:
        ``image_dim``, ``text_dim`` and ``image_tokens``: keyword arguments of
        :meth:`histoflow.models.fusion.FusionConfig.from_params`.
    """
    return {
        "image_dim": int(tensors["image_tokens"].shape[2]),
        "text_dim": int(tensors["text_tokens"].shape[2]),
        "image_tokens": int(tensors["image_tokens"].shape[1]),
    }
