"""Tests for histoflow.captions.cache: keys, round trips, atomic batches, persistence."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

import pytest

from histoflow.captions.cache import (
    MORPHOLOGY_REVISION,
    CacheKey,
    CaptionCache,
    key_for,
    prompt_hash,
)
from histoflow.config import CaptionsConfig

KEY = CacheKey("vlm", "org/model", "abc123", prompt_hash("Describe the tissue."))
ITEMS = {"a" * 64: "dense nuclei", "b" * 64: "loose stroma", "c" * 64: "fat; no nuclei"}


@pytest.fixture
def cache(tmp_path) -> Iterator[CaptionCache]:
    with CaptionCache(tmp_path / "sub" / "cache.sqlite") as opened:
        yield opened


def test_round_trip_returns_only_hits(cache):
    cache.put_many(ITEMS, KEY)
    assert cache.get_many([*ITEMS, "d" * 64], KEY) == ITEMS
    assert cache.get_many([], KEY) == {}
    assert len(cache) == 3


def test_which_and_how_many_are_cached_without_reading_captions(cache, monkeypatch):
    cache.put_many(ITEMS, KEY)
    other = dataclasses.replace(KEY, revision="def456")
    asked = ["a" * 64, "d" * 64, "b" * 64, "a" * 64]  # a repeat counts once
    assert cache.cached(asked, KEY) == {"a" * 64, "b" * 64}
    assert cache.count(asked, KEY) == 2
    assert cache.count(asked, other) == 0
    monkeypatch.setattr("histoflow.captions.cache._CHUNK", 1)  # one query per sha, summed
    assert cache.count(asked, KEY) == 2
    assert cache.get_many(asked, KEY) == {s: ITEMS[s] for s in ("a" * 64, "b" * 64)}


def test_put_replaces_a_caption_under_the_same_key(cache):
    cache.put_many(ITEMS, KEY)
    cache.put_many({"a" * 64: "revised"}, KEY)
    assert cache.get_many(["a" * 64], KEY) == {"a" * 64: "revised"}
    assert len(cache) == 3


@pytest.mark.parametrize("field", ["backend", "model_id", "revision", "prompt_hash"])
def test_any_other_key_part_misses(cache, field):
    cache.put_many(ITEMS, KEY)
    other = dataclasses.replace(KEY, **{field: getattr(KEY, field) + "x"})
    assert cache.get_many(ITEMS, other) == {}


class _FailsAfter(Mapping):
    """A mapping whose iteration raises after ``n`` items: a batch that breaks mid-write."""

    def __init__(self, items: dict[str, str], n: int):
        self._items, self._n = items, n

    def __getitem__(self, sha):
        return self._items[sha]

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        for i, sha in enumerate(self._items):
            if i == self._n:
                raise RuntimeError("killed mid-batch")
            yield sha


def test_put_many_stores_all_or_nothing(cache):
    cache.put_many({"z" * 64: "earlier batch"}, KEY)
    with pytest.raises(RuntimeError, match="killed mid-batch"):
        cache.put_many(_FailsAfter(ITEMS, 2), KEY)
    assert cache.get_many(ITEMS, KEY) == {}
    assert len(cache) == 1  # the earlier, committed batch stays
    cache.put_many(ITEMS, KEY)  # the cache is usable after the failure
    assert cache.get_many(ITEMS, KEY) == ITEMS


def test_reopened_cache_keeps_its_captions(tmp_path):
    path = tmp_path / "cache.sqlite"
    with CaptionCache(path) as cache:
        cache.put_many(ITEMS, KEY)
    reopened = CaptionCache(path)
    try:
        assert reopened.get_many(ITEMS, KEY) == ITEMS
    finally:
        reopened.close()


def test_many_shas_are_looked_up_in_chunks(cache):
    items = {f"{i:064x}": f"caption {i}" for i in range(2500)}
    cache.put_many(items, KEY)
    assert cache.get_many(items, KEY) == items


def test_prompt_hash_is_16_hex_of_sha256():
    assert prompt_hash("") == "e3b0c44298fc1c14"  # sha256 of the empty string
    assert prompt_hash("a") != prompt_hash("b")


def test_key_for_each_backend():
    morphology = key_for(CaptionsConfig(prompt="ignored by morphology"))
    assert morphology == CacheKey("morphology", "morphology", MORPHOLOGY_REVISION, prompt_hash(""))
    assert len(MORPHOLOGY_REVISION) == 16
    # Not in the (offline) hub cache: the revision stays as written.
    vlm = key_for(CaptionsConfig(backend="vlm", model="org/m", revision="r1", prompt="Describe."))
    assert vlm == CacheKey("vlm", "org/m", "r1", prompt_hash("Describe.\n48\n0"))
    # Generation settings change the words, so they change the key.
    longer = key_for(
        CaptionsConfig(
            backend="vlm", model="org/m", revision="r1", prompt="Describe.", max_new_tokens=96
        )
    )
    assert longer != vlm


def test_local_vlm_folder_is_keyed_by_its_files(tmp_path):
    folder = tmp_path / "tiny-vlm"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    cfg = CaptionsConfig(backend="vlm", model=str(folder), revision="main")
    before = key_for(cfg)
    assert before.revision != "main" and key_for(cfg) == before
    (folder / "model.safetensors").write_bytes(b"new weights")
    assert key_for(cfg).revision != before.revision
