"""The 64-bit perceptual hash of an image: computing it, reading it, and near-duplicate search.

:func:`perceptual_hash` of a luminance image ``Y``: ``Y`` area-averaged to 32x32 (a fixed
filter, so hashes compare across runs and image sizes), its 2-D DCT-II (orthonormal), the
top-left 8x8 block row by row, a bit set where the coefficient exceeds the median of the block
without its DC term; written as 16 hex digits (the ``phash`` QC column). Re-encoded or slightly
altered copies of a tile have a small :func:`phash_distance`.

:func:`near_duplicate_pairs` finds every close pair without comparing every pair. Two hashes
are near duplicates when their Hamming distance (popcount of XOR) is at most ``d``.
Pigeonhole: split the 64 bits into ``d + 1`` bands; two hashes that differ in at most ``d``
bits agree exactly on at least one band. So each band is a bucket key, only hashes sharing a
bucket are compared, and the result is exact (no missed pairs, no false ones).

Rows are collapsed before any comparison: copies that can never pair (same hash and same
group, e.g. thousands of flat background tiles in one split) count once, so the work grows with
the number of pairs found, not with the square of the number of images.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.fft import dct

__all__ = ["hamming", "near_duplicate_pairs", "parse_phash", "perceptual_hash", "phash_distance"]

_BITS = 64
# Luminance area-averaged to 32x32, then the signs of the 8x8 lowest DCT frequencies.
_PHASH_SIZE = 32
_PHASH_BLOCK = 8
_PHASH_HEX = _PHASH_BLOCK * _PHASH_BLOCK // 4


def perceptual_hash(lum: np.ndarray) -> str:
    """The 64-bit perceptual hash of a luminance image, as 16 hex digits.

    Args:
        lum: (H, W) luminance in [0, 1].
    """
    # The 8x8 lowest frequencies of the 2-D DCT of lum area-averaged to 32x32, as one
    # projection per axis: (8, H) @ (H, W) @ (W, 8).
    height, width = lum.shape
    block = _phash_projection(height) @ lum.astype(np.float64) @ _phash_projection(width).T
    coefficients = block.ravel()  # (64,), DC first
    # The DC term is the mean brightness, far above the rest: leave it out of the threshold.
    # The median of the other 63 is the 32nd smallest.
    threshold = np.sort(coefficients[1:])[(coefficients.size - 1) // 2]
    return np.packbits(coefficients > threshold).tobytes().hex()


def phash_distance(a: str, b: str) -> int:
    """Hamming distance between two ``phash`` values: how many of the 64 bits differ.

    Re-encodings, mild blur, noise or stain jitter of the same tile stay within a few bits
    (a JPEG at quality 95 of a PNG tile: 0-4); unrelated tiles differ in about half (~32).
    The hash is not flip- or rotation-invariant: a mirrored copy is *not* near.

    Args:
        a: 16 hex digits, as in the ``phash`` column.
        b: Likewise.

    Raises:
        ValueError: A hash is empty (an unreadable image has none) or not 16 hex digits.
    """
    for value in (a, b):
        if len(value) != _PHASH_HEX:
            raise ValueError(
                f"phash must be {_PHASH_HEX} hex digits, got {value!r}"
                " (an unreadable image has phash '': filter on readable first)"
            )
    return (int(a, 16) ^ int(b, 16)).bit_count()


def parse_phash(hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read 16-character hex hashes into integers.

    Args:
        hashes: One hash per image; ``''``, None or NaN for an image without one.

    Returns:
        ``(values, valid)``: uint64 values of shape (N,) (0 where invalid) and a boolean mask.

    Raises:
        ValueError: naming the first hash that is neither empty nor 16 hex digits.
    """
    values = np.zeros(len(hashes), dtype=np.uint64)
    valid = np.zeros(len(hashes), dtype=bool)
    for i, text in enumerate(hashes):
        if not isinstance(text, str) or not text:
            continue
        if len(text) != 16:
            raise ValueError(f"phash {text!r} (row {i}) must be 16 hex digits or empty")
        try:
            values[i] = int(text, 16)
        except ValueError:
            raise ValueError(f"phash {text!r} (row {i}) must be 16 hex digits or empty") from None
        valid[i] = True
    return values, valid


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance between uint64 arrays (broadcasting), as int64."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def near_duplicate_pairs(
    hashes: Sequence[str],
    max_distance: int,
    *,
    groups: Sequence | None = None,
    distinct: Sequence | None = None,
) -> pd.DataFrame:
    """Every pair of images whose perceptual hashes are within ``max_distance`` bits.

    Args:
        hashes: 16-hex-digit hashes, one per image; empty ones take part in no pair.
        max_distance: Largest Hamming distance that counts as a near duplicate (0-64).
        groups: Optional group per image (e.g. the split): only pairs from different groups.
        distinct: Optional key per image (e.g. sha256): only pairs whose keys differ, so
            byte-identical copies are left to an exact-duplicate check.

    Returns:
        Columns ``i``, ``j`` (row positions, ``i < j``) and ``distance``, sorted by ``i, j``.
    """
    values, valid = parse_phash(hashes)
    n = len(values)
    rows = np.flatnonzero(valid)  # (R,) table positions with a hash
    hashed = values[rows]
    # Without groups or keys every row is its own, so every pair qualifies.
    group = _codes(groups, n)[rows]
    key = _codes(distinct, n)[rows]

    # Three levels, each collapsing the one below: units (rows sharing hash, group and key:
    # never a pair), blocks (units sharing hash and group: never a pair either), hashes.
    unit_rows, unit = _collapse(hashed, group, key)
    unit_hash, unit_group, unit_key = hashed[unit], group[unit], key[unit]
    block_units, block = _collapse(unit_hash, unit_group)
    block_hash, block_group = unit_hash[block], unit_group[block]
    uniq, hash_of_block = np.unique(block_hash, return_inverse=True)
    hash_blocks = _members(hash_of_block)

    a, b = _close_hashes(uniq, max_distance)
    # Blocks of one hash are at distance 0 from each other: pair such a hash with itself.
    shared = np.flatnonzero(hash_blocks[2] > 1)
    p, q = _expand(np.concatenate((a, shared)), np.concatenate((b, shared)), *hash_blocks)
    # A hash paired with itself meets each block pair twice, and each block once; keep p < q.
    keep = (block_group[p] != block_group[q]) & ((block_hash[p] != block_hash[q]) | (p < q))
    u, v = _expand(p[keep], q[keep], *block_units)
    keep = unit_key[u] != unit_key[v]
    i, j = _expand(u[keep], v[keep], *unit_rows)

    i, j = rows[i], rows[j]
    i, j = np.minimum(i, j), np.maximum(i, j)
    pairs = pd.DataFrame({"i": i, "j": j, "distance": hamming(values[i], values[j])})
    return pairs.sort_values(["i", "j"], ignore_index=True)


def _close_hashes(uniq: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of distinct hashes (indices into ``uniq``, a < b) within ``max_distance``."""
    n = len(uniq)
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if max_distance >= _BITS:  # every pair qualifies; no band can be narrower than a bit
        a, b = np.triu_indices(n, k=1)
        return a.astype(np.int64), b.astype(np.int64)

    edges = np.linspace(0, _BITS, max_distance + 2).round().astype(int)
    found = []
    for low, high in itertools.pairwise(edges):
        band = (uniq >> np.uint64(low)) & np.uint64((1 << int(high - low)) - 1)
        found.append(_band_pairs(uniq, band, max_distance))
    # A pair agreeing on several bands is found once per band.
    code = np.unique(np.concatenate(found))
    return code // n, code % n


def _band_pairs(uniq: np.ndarray, band: np.ndarray, max_distance: int) -> np.ndarray:
    """Close pairs among hashes with equal ``band``, encoded as ``a * n + b`` (a < b).

    After sorting, equal bands are runs: element ``p`` meets ``p + k`` for every offset ``k``
    that stays inside its run. One vectorised pass per offset, so the loop runs as many
    times as the longest run, and candidates are verified as they come, never all stored.
    """
    n = len(uniq)
    order = np.argsort(band, kind="stable")
    band, ranked = band[order], uniq[order]
    found = []
    pos = np.arange(n)
    for k in range(1, n):
        # Positions p whose run reaches p + k; a subset of those that reached p + k - 1.
        pos = pos[pos + k < n]
        pos = pos[band[pos + k] == band[pos]]
        if len(pos) == 0:
            break
        close = pos[hamming(ranked[pos], ranked[pos + k]) <= max_distance]
        a, b = order[close], order[close + k]
        found.append(np.minimum(a, b) * n + np.maximum(a, b))
    return np.concatenate(found) if found else np.empty(0, np.int64)


def _codes(labels: Sequence | None, n: int) -> np.ndarray:
    if labels is None:
        return np.arange(n, dtype=np.int64)
    return pd.factorize(pd.Series(list(labels), dtype=object))[0].astype(np.int64)


def _collapse(*columns: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Group equal rows of ``columns``.

    Returns:
        ``(members, first)``: :func:`_members` of the group ids, and one row per group.
    """
    ids = pd.DataFrame(dict(enumerate(columns))).groupby(list(range(len(columns)))).ngroup()
    members = _members(ids.to_numpy())
    return members, members[0][members[1]]


def _members(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows by id: the rows of id ``g`` are ``order[start[g]:start[g] + count[g]]``."""
    order = np.argsort(ids, kind="stable")
    count = np.bincount(ids, minlength=int(ids.max(initial=-1)) + 1)
    return order, np.cumsum(count) - count, count


def _expand(
    a: np.ndarray, b: np.ndarray, members: np.ndarray, start: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every member of ``a[p]`` with every member of ``b[p]``, for every ``p``: flat arrays."""
    sizes = count[a] * count[b]
    pair = np.repeat(np.arange(len(a)), sizes)
    offset = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    width = count[b][pair]
    i = members[start[a][pair] + offset // width]
    j = members[start[b][pair] + offset % width]
    return i, j


@functools.lru_cache(maxsize=32)
def _phash_projection(n: int) -> np.ndarray:
    """(8, n) matrix: area-average n samples down to 32, then take the 8 lowest DCT-II terms."""
    # Output sample i averages the input interval [i n/32, (i+1) n/32), each input pixel
    # weighted by its overlap (integer factors: plain block means, as Pillow's BOX filter).
    edges = np.arange(_PHASH_SIZE + 1) * (n / _PHASH_SIZE)
    pixel = np.arange(n)[None, :]  # (1, n)
    overlap = np.minimum(edges[1:, None], pixel + 1) - np.maximum(edges[:-1, None], pixel)
    area = np.clip(overlap, 0.0, None)  # (32, n)
    area /= area.sum(axis=1, keepdims=True)
    # Orthonormal DCT-II basis as a matrix: scipy.fft.dct of the identity, row k = frequency k.
    basis = dct(np.eye(_PHASH_SIZE), norm="ortho", axis=0)[:_PHASH_BLOCK]  # (8, 32)
    return basis @ area
