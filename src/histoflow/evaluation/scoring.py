"""Scoring feature-store rows with a fusion network, one batch read at a time."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from histoflow.inference import fuse

__all__ = ["score_rows"]

_FUSION_INPUTS = ("image_tokens", "text_tokens", "text_mask")


def score_rows(
    net: nn.Module, store, rows, batch_size: int = 256, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~histoflow.inference.fuse` over store rows, one batch read at a time.

    Args:
        net: a fusion network or ablation.
        store: a :class:`~histoflow.embeddings.store.FeatureStore`.
        rows: a boolean mask over the store or row numbers, scored in that order.
        batch_size: rows read and scored at once.
        temperature: the fusion model's calibration temperature (1: the raw probabilities).

    Returns:
        Class probabilities (n, C) and head disagreement (n,).
    """
    rows = np.asarray(rows)
    rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
    probs, unc = [], []
    for s in range(0, len(rows), batch_size):
        batch = store.rows(rows[s : s + batch_size])
        p, u = fuse(
            net,
            *(torch.from_numpy(batch[k]) for k in _FUSION_INPUTS),
            batch_size,
            temperature=temperature,
        )
        probs.append(p)
        unc.append(u)
    if not probs:
        return fuse(net, *(torch.zeros(0) for _ in _FUSION_INPUTS))
    return np.concatenate(probs), np.concatenate(unc)
