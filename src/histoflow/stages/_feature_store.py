"""Bounded-memory storage for ``embed``: a streamed safetensors file and an image-embedding cache;
:func:`load_features` reads ``embed``'s output back (for ``train_fusion``, ``evaluate`` and
``reference``, which then need not import the image models).

- :class:`SafetensorsStream` writes the safetensors header first (all shapes are known),
  then each tensor's rows at their offsets with positional writes, batch by batch: the file
  never exists whole in memory, and readers (``safe_open``) see an ordinary safetensors file.
- :class:`ImageEmbeddingCache` keeps each image's pooled and token embeddings (float16) in
  SQLite, keyed by (encoder key, image sha256), beside DVC's outputs (DVC deletes outs
  before a stage runs). One transaction per batch: an interrupted ``embed`` keeps its work.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import safe_open

from histoflow.data.manifest import read_manifest

if TYPE_CHECKING:
    import pandas as pd
    import torch

__all__ = ["ImageEmbeddingCache", "SafetensorsStream", "load_features"]

_DTYPES = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32", np.dtype(np.bool_): "BOOL"}
_SCHEMA = """CREATE TABLE IF NOT EXISTS image_embeddings (
    encoder TEXT NOT NULL, image TEXT NOT NULL, pooled BLOB NOT NULL, tokens BLOB NOT NULL,
    PRIMARY KEY (encoder, image))"""
_SHAPES = (
    "CREATE TABLE IF NOT EXISTS image_embedding_shapes (encoder TEXT PRIMARY KEY, shapes TEXT)"
)
_SQL_CHUNK = 500  # stay under SQLite's bound-parameter limit


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
        os.fsync(self._fd)
        os.close(self._fd)

    def __enter__(self) -> SafetensorsStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ImageEmbeddingCache:
    """Per-image float16 embeddings of one encoder; rows of other encoders are dropped on open.

    Args:
        path: SQLite file (created if missing).
        encoder: the encoder key (checkpoint hash, token grid, precision).
    """

    def __init__(self, path: Path, encoder: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.encoder = encoder
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.execute(_SHAPES)
        with self._db:  # a new encoder invalidates every earlier embedding
            self._db.execute("DELETE FROM image_embeddings WHERE encoder != ?", (encoder,))
            self._db.execute("DELETE FROM image_embedding_shapes WHERE encoder != ?", (encoder,))
        self.shapes: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    def missing(self, images: list[str]) -> list[str]:
        """The distinct image hashes of ``images`` not cached yet, in first-seen order."""
        found: set[str] = set()
        unique = list(dict.fromkeys(images))
        for s in range(0, len(unique), _SQL_CHUNK):
            chunk = unique[s : s + _SQL_CHUNK]
            query = (
                "SELECT image FROM image_embeddings WHERE encoder = ? AND image IN "
                f"({','.join('?' * len(chunk))})"
            )
            found.update(r[0] for r in self._db.execute(query, [self.encoder, *chunk]))
        return [i for i in unique if i not in found]

    def put(self, images: list[str], pooled: np.ndarray, tokens: np.ndarray) -> None:
        """Store a batch: pooled (B, D) and tokens (B, T, Dt), as float16, in one transaction."""
        pooled, tokens = pooled.astype(np.float16), tokens.astype(np.float16)
        self._remember_shapes(pooled.shape[1:], tokens.shape[1:])
        rows = [
            (self.encoder, image, pooled[i].tobytes(), tokens[i].tobytes())
            for i, image in enumerate(images)
        ]
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO image_embeddings VALUES (?, ?, ?, ?)", rows
            )

    def get(self, images: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Pooled (N, D) and tokens (N, T, Dt) float16 for ``images`` (all must be cached)."""
        found: dict[str, tuple[bytes, bytes]] = {}
        unique = sorted(set(images))
        for s in range(0, len(unique), _SQL_CHUNK):
            chunk = unique[s : s + _SQL_CHUNK]
            query = (
                "SELECT image, pooled, tokens FROM image_embeddings WHERE encoder = ? AND image "
                f"IN ({','.join('?' * len(chunk))})"
            )
            found.update({i: (p, t) for i, p, t in self._db.execute(query, [self.encoder, *chunk])})
        pooled_shape, tokens_shape = self.row_shapes()
        pooled = np.stack([np.frombuffer(found[i][0], np.float16) for i in images])
        tokens = np.stack([np.frombuffer(found[i][1], np.float16) for i in images])
        return pooled.reshape(-1, *pooled_shape), tokens.reshape(-1, *tokens_shape)

    def row_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(D,) and (T, Dt) of this encoder's rows, from a stored row's metadata."""
        if self.shapes is None:
            row = self._db.execute(
                "SELECT shapes FROM image_embedding_shapes WHERE encoder = ?", (self.encoder,)
            ).fetchone()
            if row is None:
                raise LookupError("the image embedding cache holds no rows for this encoder")
            pooled, tokens = json.loads(row[0])
            self.shapes = (tuple(pooled), tuple(tokens))
        return self.shapes

    def close(self) -> None:
        self._db.close()

    def _remember_shapes(self, pooled: tuple[int, ...], tokens: tuple[int, ...]) -> None:
        if self.shapes == (tuple(pooled), tuple(tokens)):
            return
        self.shapes = (tuple(pooled), tuple(tokens))
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO image_embedding_shapes VALUES (?, ?)",
                (self.encoder, json.dumps([list(pooled), list(tokens)])),
            )


def load_features(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], pd.DataFrame]:
    """The cached tensors, their metadata, and the index table of an ``embed`` output folder."""
    path = Path(folder) / "features.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `histoflow stage embed` first")
    with safe_open(path, framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        meta = fh.metadata()
    return tensors, meta, read_manifest(Path(folder) / "index.csv")
