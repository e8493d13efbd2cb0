"""Drop evaluation copies of training images, so val and test measure unseen images.

Public datasets often hold the same scan in train and test (the brain MRI set has 84 groups of
byte-identical files across its splits, and hundreds of re-encoded near copies). Validation
reports them as errors; ``validate.deduplicate`` instead keeps each image in its earliest split
(train, then val, then test) and drops the later copies, recording why.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from histoflow.data.manifest import SPLITS
from histoflow.data.quality.hashing import near_duplicate_pairs

__all__ = ["cross_split_copies"]


def cross_split_copies(
    table: pd.DataFrame, mode: Literal["none", "exact", "near"], max_distance: int
) -> dict[str, str]:
    """Images to drop because an earlier split holds the same (or nearly the same) image.

    Args:
        table: One row per image with ``path``, ``split``, ``readable``, ``sha256`` and, for
            ``near``, ``phash`` (the validate stage's QC columns).
        mode: ``none`` drops nothing; ``exact`` drops byte-identical copies (same sha256);
            ``near`` also drops images whose perceptual hash is within ``max_distance`` bits of
            an image in an earlier split.
        max_distance: Hamming distance (of 64 bits) that counts as a near copy.

    Returns:
        ``{path: reason}`` for each image to drop; the reason names the kept copy.
    """
    if mode == "none" or table.empty:
        return {}
    frame = table.reset_index(drop=True)
    rank = frame["split"].map({s: i for i, s in enumerate(SPLITS)}).fillna(len(SPLITS))
    rank = rank.to_numpy(dtype=int)
    sha = frame["sha256"].fillna("").astype(str).to_numpy()
    # Not in place: under copy-on-write (validate's) to_numpy() gives a read-only view.
    usable = frame["readable"].fillna(False).astype(bool).to_numpy() & (sha != "")

    drop: dict[str, str] = {}
    # Exact: within each sha256 group, keep the rows of the earliest split present.
    for _, rows in frame.loc[usable, "path"].groupby(sha[usable]).groups.items():
        rows = np.asarray(rows)
        first = rank[rows].min()
        keeper = frame.at[rows[rank[rows] == first][0], "path"]
        for r in rows[rank[rows] > first]:
            drop[frame.at[r, "path"]] = f"identical to {keeper} ({SPLITS[first]})"
    if mode == "exact":
        return drop

    pairs = near_duplicate_pairs(
        frame["phash"].where(usable, "").tolist(),
        max_distance,
        groups=frame["split"].tolist(),
        distinct=sha.tolist(),
    )
    # Of each cross-split pair the later split's image goes (even when the earlier one goes
    # too: it was near an image the model may have seen).
    for i, j, d in pairs[["i", "j", "distance"]].itertuples(index=False):
        early, late = (i, j) if rank[i] < rank[j] else (j, i)
        if frame.at[late, "path"] in drop:
            continue
        drop[frame.at[late, "path"]] = (
            f"near copy ({d} bits) of {frame.at[early, 'path']} ({frame.at[early, 'split']})"
        )
    return drop
