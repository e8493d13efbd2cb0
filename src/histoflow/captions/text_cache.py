"""A disk cache of caption text embeddings, keyed by (encoder, max tokens, precision, text).

SQLite, one transaction per batch: an interrupted ``embed`` keeps what it finished.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import numpy as np
import torch

from histoflow.captions.text import TextEmbeddings, TextEncoder

__all__ = ["encode_cached"]

_SCHEMA = """CREATE TABLE IF NOT EXISTS text_embeddings (
    key TEXT PRIMARY KEY, tokens BLOB NOT NULL, mask BLOB NOT NULL, pooled BLOB NOT NULL)"""


def encode_cached(
    encoder: TextEncoder, texts: list[str], cache: Path, *, fingerprint: str, batch_size: int = 64
) -> tuple[TextEmbeddings, int]:
    """Embed ``texts``, computing only those not already in ``cache``.

    Args:
        encoder: the text encoder.
        texts: captions, possibly repeated.
        cache: SQLite file (created if missing).
        fingerprint: identifies the encoder's weights; part of every key.
        batch_size: texts per committed transaction (the encoder batches on its own).

    Returns:
        The embeddings in the order of ``texts``, and how many distinct texts were computed.
    """
    cache.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{fingerprint}|{encoder.max_tokens}|{encoder.precision}|"
    keys = [hashlib.sha256((prefix + t).encode()).hexdigest() for t in texts]
    with sqlite3.connect(cache) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(_SCHEMA)
        found = _load(db, sorted(set(keys)))
        todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in found}.items())
        for s in range(0, len(todo), batch_size):
            batch = todo[s : s + batch_size]
            emb = encoder.encode([t for _, t in batch])
            rows = [
                (k, _blob(emb.tokens[i].half()), _blob(emb.mask[i]), _blob(emb.pooled[i].half()))
                for i, (k, _) in enumerate(batch)
            ]
            with db:  # one transaction per batch
                db.executemany("INSERT OR REPLACE INTO text_embeddings VALUES (?, ?, ?, ?)", rows)
            found.update(
                {k: (r[1], r[2], r[3]) for k, r in zip((k for k, _ in batch), rows, strict=True)}
            )
    shape = (encoder.max_tokens, encoder.dim)
    tokens = torch.stack([_tensor(found[k][0], torch.float16, shape) for k in keys]).float()
    mask = torch.stack([_tensor(found[k][1], torch.bool, shape[:1]) for k in keys])
    pooled = torch.stack([_tensor(found[k][2], torch.float16, shape[1:]) for k in keys]).float()
    return TextEmbeddings(tokens, mask, pooled), len(todo)


def _load(db: sqlite3.Connection, keys: list[str]) -> dict[str, tuple[bytes, bytes, bytes]]:
    found: dict[str, tuple[bytes, bytes, bytes]] = {}
    for s in range(0, len(keys), 500):  # stay under SQLite's bound-parameter limit
        chunk = keys[s : s + 500]
        query = f"SELECT key, tokens, mask, pooled FROM text_embeddings WHERE key IN ({','.join('?' * len(chunk))})"
        found.update({k: (t, m, p) for k, t, m, p in db.execute(query, chunk)})
    return found


def _blob(t: torch.Tensor) -> bytes:
    return t.contiguous().numpy().tobytes()


def _tensor(blob: bytes, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    np_dtype = {torch.float16: np.float16, torch.bool: np.bool_}[dtype]
    return torch.from_numpy(np.frombuffer(blob, dtype=np_dtype).copy().reshape(shape))
