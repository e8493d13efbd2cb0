"""Per-image embeddings cached across ``embed`` runs, and computing the ones missing.

:class:`ImageEmbeddingCache` keeps each image's pooled and token embeddings (float16) in
SQLite, keyed by (encoder key, image sha256), beside DVC's outputs (DVC deletes outs before a
stage runs). One transaction per batch: an interrupted ``embed`` keeps its work.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader
from tqdm import tqdm

from histoflow.data.datasets import TileDataset
from histoflow.inference import ImageEmbedder

__all__ = ["ImageEmbeddingCache", "embed_missing"]

_SCHEMA = """CREATE TABLE IF NOT EXISTS image_embeddings (
    encoder TEXT NOT NULL, image TEXT NOT NULL, pooled BLOB NOT NULL, tokens BLOB NOT NULL,
    PRIMARY KEY (encoder, image))"""
_SHAPES = (
    "CREATE TABLE IF NOT EXISTS image_embedding_shapes (encoder TEXT PRIMARY KEY, shapes TEXT)"
)
_SQL_CHUNK = 500  # stay under SQLite's bound-parameter limit


class ImageEmbeddingCache:
    """Per-image float16 embeddings of one encoder; rows of other encoders are dropped on open.

    Args:
        path: SQLite file (created if missing).
        encoder: the encoder key (checkpoint hash, token grid, precision).
    """

    def __init__(self, path: Path, encoder: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(path)
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
        """Close the database."""
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


def embed_missing(
    embedder: ImageEmbedder,
    cache: ImageEmbeddingCache,
    root: Path,
    paths: list[str],
    hashes: list[str],
    *,
    batch_size: int,
    num_workers: int,
) -> int:
    """Embed the distinct images ``cache`` lacks, batch by batch, storing each batch.

    Args:
        embedder: the trained encoder.
        cache: where each batch goes as soon as it is embedded.
        root: the folder ``paths`` are relative to.
        paths: every image's path (duplicates by content allowed).
        hashes: every image's sha256, aligned with ``paths``.
        batch_size: images per forward pass.
        num_workers: decoding processes (0: decode in this process).

    Returns:
        How many images were embedded.
    """
    todo = cache.missing(hashes)
    if not todo:
        return 0
    first_path = dict(zip(reversed(hashes), reversed(paths), strict=True))  # hash -> first path
    loader = DataLoader(
        TileDataset(
            root,
            [first_path[h] for h in todo],
            None,
            embedder.transform,
            max_pixels=embedder.max_pixels,
        ),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=embedder.device.type == "cuda",
        prefetch_factor=4 if num_workers else None,
        # Workers forked from a process with threads (a Prefect or browser session in the same
        # interpreter) can die at start; a forkserver starts them from a clean process.
        multiprocessing_context="forkserver" if num_workers else None,
    )
    done = 0
    with tqdm(total=len(todo), desc="embed images", unit="img") as bar:
        for images, _ in loader:
            pooled, tokens = embedder.embed_tensor(images)  # (B, D), (B, T, Dt)
            cache.put(todo[done : done + len(images)], pooled.numpy(), tokens.numpy())
            done += len(images)
            bar.update(len(images))
    return done
