"""Tests for histoflow.data.quality.hashing: phash distance and the banded near-duplicate
search, checked against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from histoflow.data.quality.hashing import near_duplicate_pairs, phash_distance


def test_phash_distance_rejects_a_missing_hash() -> None:
    with pytest.raises(ValueError, match="unreadable image has phash ''"):
        phash_distance("", "0" * 16)


def _brute_force(hashes, d, groups, distinct):
    pairs = []
    for i, j in itertools.combinations(range(len(hashes)), 2):
        if not hashes[i] or not hashes[j] or groups[i] == groups[j] or distinct[i] == distinct[j]:
            continue
        dist = phash_distance(hashes[i], hashes[j])
        if dist <= d:
            pairs.append((i, j, dist))
    return pairs


@pytest.mark.parametrize("d", [0, 2, 5, 9])
def test_near_duplicate_search_matches_brute_force(d):
    # Clusters of hashes a few bits apart, some exact copies, some missing.
    rng = np.random.default_rng(d)
    centres = rng.integers(0, 2**63, 6)
    hashes = []
    for _ in range(80):
        h = int(rng.choice(centres))
        for bit in rng.integers(0, 64, rng.integers(0, 7)):
            h ^= 1 << int(bit)
        hashes.append(f"{h:016x}" if rng.random() > 0.1 else "")
    groups = list(rng.choice(["train", "val", "test"], 80))
    distinct = list(rng.choice(["a", "b", "c", "d"], 80))
    found = near_duplicate_pairs(hashes, d, groups=groups, distinct=distinct)
    assert list(found.itertuples(index=False, name=None)) == _brute_force(
        hashes, d, groups, distinct
    )


def test_near_duplicate_search_on_20000_hashes_finds_planted_pairs():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**63, 20_000, dtype=np.int64).astype(np.uint64)
    # Even rows are test, odd rows train: plant pairs across the two.
    values[[101, 201, 301]] = values[[10, 20, 30]] ^ np.uint64(0b1011)  # 3 bits apart
    values[401] = values[40]  # same hash, different file
    values[501] = values[50] ^ np.uint64(0b11111)  # 5 bits: too far
    values[600:5600] = 0  # many copies of one hash (flat tiles), all in one split
    hashes = [f"{v:016x}" for v in values]
    splits = np.where(np.arange(20_000) % 2, "train", "test")
    splits[600:5600] = "train"
    found = near_duplicate_pairs(hashes, 4, groups=splits, distinct=range(20_000))
    assert list(found.itertuples(index=False, name=None)) == [
        (10, 101, 3),
        (20, 201, 3),
        (30, 301, 3),
        (40, 401, 0),
    ]
    assert all(phash_distance(hashes[i], hashes[j]) == d for i, j, d in found.values)


def test_bad_phash_is_named():
    with pytest.raises(ValueError, match="'xyz'"):
        near_duplicate_pairs(["0" * 16, "xyz"], 4)
