"""Stage ``captions``: describe every tile in words, keyed by the image's sha256.

Each distinct image (by content) is captioned once per captioner: captions live in a SQLite
cache beside the CSV, keyed by sha256 and by what captioned them
(:mod:`histoflow.captions.cache`).
A run captions only the images the cache lacks for the current key, writing each finished
batch to the cache at once, so a re-run with nothing changed does no captioning, a new prompt
or backend recaptions everything, and an interrupted run resumes where it stopped. The cache is
not a DVC output: DVC deletes declared outputs before it runs a stage.

Writes ``captions.csv`` (``sha256,path,backend,model,revision,caption``, one row per manifest
row, in manifest order) and ``gallery.html``, a few captioned tiles per class.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from histoflow.captions import create_captioner
from histoflow.captions.cache import CacheKey, CaptionCache, key_for
from histoflow.captions.gallery import write_gallery
from histoflow.config import CaptionsConfig, Params
from histoflow.data.images import load_rgb
from histoflow.data.manifest import manifest_batches, read_manifest
from histoflow.io import atomic_path

__all__ = ["CACHE_NAME", "COLUMNS", "PARAMS", "Inputs", "Outputs", "run"]

PARAMS = ("captions", "data.max_pixels")
CACHE_NAME = ".caption_cache.sqlite"  # in the folder of Outputs.captions
# Manifest rows held at a time: the whole table as pandas objects held ~1 KB per tile.
_BATCH_ROWS = 8192  # while finding and captioning what the cache lacks
_CSV_CHUNK = 8192  # while writing captions.csv
COLUMNS = ("sha256", "path", "backend", "model", "revision", "caption")

# (images, their rows of validate's per-image table) -> captions, one batch at a time.
_BatchCaptioner = Callable[[Sequence[Image.Image], Sequence[dict]], list[str]]


@dataclass(frozen=True)
class Inputs:
    """The images and the validated manifest."""

    data: Path = Path("data")
    manifest: Path = Path("outputs/validate/manifest.parquet")


@dataclass(frozen=True)
class Outputs:
    """The captions table and the caption gallery."""

    captions: Path = Path("outputs/captions/captions.csv")
    gallery: Path = Path("reports/captions")


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Caption every distinct image not yet cached; write the captions CSV and the gallery.

    The manifest is read a batch of rows at a time, once to count what the cache holds, once
    to caption what it lacks (only when it lacks something) and once to write the CSV, so the
    stage's memory does not grow with the number of tiles: only the gallery holds a path and
    a label per tile, as Arrow strings.

    Returns:
        Metrics: ``n_images`` (manifest rows), ``n_unique`` (distinct sha256), ``n_cached``
        (found in the cache), ``n_new`` (captioned now), ``backend``, ``model`` and
        ``seconds``.
    """
    started = time.perf_counter()
    key = key_for(cfg.captions)
    with CaptionCache(outputs.captions.parent / CACHE_NAME) as cache:
        n_unique, n_cached = 0, 0
        for rows in _first_rows(inputs.manifest, ("sha256",)):
            n_unique += len(rows)
            n_cached += cache.count(rows["sha256"], key)
        if n_cached < n_unique:
            key, n_cached = _fill_cache(
                cache, key, inputs, cfg.captions, cfg.data.max_pixels, n_unique - n_cached
            )
        n_images = _write_csv(inputs.manifest, outputs.captions, cache, key)
        # The gallery sorts every path of a class: paths and labels as Arrow strings (bytes,
        # not Python objects); the sha256s only of the tiles shown (their index is their row).
        write_gallery(
            read_manifest(inputs.manifest, ("path", "label"), arrow_strings=True).assign(
                backend=key.backend, model=key.model_id
            ),
            outputs.gallery,
            data_root=inputs.data,
            per_class=cfg.captions.gallery_per_class,
            max_pixels=cfg.data.max_pixels,
            captions=lambda shown: _with_captions(
                _take(inputs.manifest, shown.index, ("sha256", "path")), cache, key
            )["caption"],
        )
    return {
        "n_images": n_images,
        "n_unique": n_unique,
        "n_cached": n_cached,
        "n_new": n_unique - n_cached,
        "backend": key.backend,
        "model": key.model_id,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _first_rows(manifest: Path, columns: Collection[str]) -> Iterator[pd.DataFrame]:
    """The manifest's rows a batch at a time, only the first row of each distinct sha256.

    What was seen is kept as 32-byte digests in a set: ~0.1 KB per distinct image, the one
    thing here that grows with the manifest.
    """
    seen: set[bytes] = set()
    for rows in manifest_batches(manifest, {"sha256", *columns}, _BATCH_ROWS):
        first = []
        for row, digest in enumerate(map(bytes.fromhex, rows["sha256"])):
            if digest not in seen:
                seen.add(digest)
                first.append(row)
        yield rows.iloc[first]


def _take(manifest: Path, rows: pd.Index, columns: Collection[str]) -> pd.DataFrame:
    """The manifest's rows at positions ``rows``, in that order, read a batch at a time."""
    found, start = [], 0
    for batch in manifest_batches(manifest, columns, _CSV_CHUNK):
        inside = rows[(rows >= start) & (rows < start + len(batch))]
        found.append(batch.iloc[inside - start].set_axis(inside))
        start += len(batch)
    return pd.concat(found).loc[rows]


def _write_csv(manifest: Path, path: Path, cache: CaptionCache, key: CacheKey) -> int:
    """Write ``captions.csv`` from the cache, a chunk of manifest rows at a time.

    Every caption in memory at once held kilobytes per tile.

    Returns:
        The number of rows written (the manifest's).
    """
    n_rows = 0
    with atomic_path(path) as tmp, tmp.open("w", newline="") as out:
        pd.DataFrame(columns=list(COLUMNS)).to_csv(out, index=False)  # the header, even if empty
        for rows in manifest_batches(manifest, ("sha256", "path"), _CSV_CHUNK):
            _with_captions(rows, cache, key).to_csv(out, header=False, index=False)
            n_rows += len(rows)
    return n_rows


def _with_captions(rows: pd.DataFrame, cache: CaptionCache, key: CacheKey) -> pd.DataFrame:
    """``rows`` (manifest rows) as ``captions.csv`` rows, their captions read from the cache."""
    found = cache.get_many(rows["sha256"], key)
    missing = sorted(set(rows["sha256"]) - set(found))
    if missing:  # the cache was filled just before: another process changed it meanwhile
        raise RuntimeError(
            f"the caption cache lost {len(missing)} caption(s) it had just stored (first: "
            f"{missing[0]}); was it edited by another run? Run the stage again"
        )
    return rows[["sha256", "path"]].assign(
        backend=key.backend,
        model=key.model_id,
        revision=key.revision,
        caption=rows["sha256"].map(found),
    )[list(COLUMNS)]


def _fill_cache(
    cache: CaptionCache,
    key: CacheKey,
    inputs: Inputs,
    captions: CaptionsConfig,
    max_pixels: int,
    n_missing: int,
) -> tuple[CacheKey, int]:
    """Caption the distinct images of the manifest missing from the cache, in manifest order.

    Each batch is stored as soon as it is captioned, so an interrupted run keeps its work.
    ``n_missing`` (how many were missing under the configured key) sizes the progress bar.

    Returns:
        The key the captions are stored under (the loaded model's, see :func:`_load_captioner`)
        and how many of the distinct images were already cached under it.
    """
    from histoflow.captions.morphology import QC_REUSED

    caption_batch, key = _load_captioner(captions, key)
    size, n_cached = captions.batch_size, 0
    with tqdm(total=n_missing, desc=f"captions ({key.backend})", unit="img") as bar:
        # What captioning reads of validate's table: the morphology captioner reuses a few QC
        # values.
        for rows in _first_rows(inputs.manifest, ("path", "label", *QC_REUSED)):
            cached = cache.cached(rows["sha256"], key)  # again: the key may have changed
            n_cached += len(cached)
            missing = rows[~rows["sha256"].isin(cached)].set_index("sha256")
            shas = list(missing.index)
            for start in range(0, len(shas), size):
                # One batch's rows as dicts at a time: every row at once held kilobytes per tile.
                batch = missing.iloc[start : start + size].to_dict("records")
                images = [
                    load_rgb(inputs.data / row["path"], max_pixels=max_pixels) for row in batch
                ]
                texts = caption_batch(images, batch)
                if len(texts) != len(images):
                    raise RuntimeError(
                        f"captioner {key.backend!r} returned {len(texts)} captions for "
                        f"{len(images)} images; it must return one caption per image"
                    )
                cache.put_many(dict(zip(shas[start : start + size], texts, strict=True)), key)
                bar.update(len(images))
    return key, n_cached


def _load_captioner(captions: CaptionsConfig, key: CacheKey) -> tuple[_BatchCaptioner, CacheKey]:
    """The configured backend's batch captioner, and the key its captions are stored under.

    Built only when some image needs captioning: a vlm takes minutes to load.
    """
    captioner = create_captioner(captions)
    if captions.backend == "morphology":
        # validate already measured these images: the captioner reuses its QC values.
        def morphology(images, rows):
            return [captioner.caption(im, qc=row) for im, row in zip(images, rows, strict=True)]

        return morphology, key
    # The loaded model's revision is the truth: a hub revision not cached before this run
    # resolves to its commit only once downloaded.
    return (lambda images, _rows: captioner.caption_batch(images)), replace(
        key, model_id=captioner.model_id, revision=captioner.revision
    )
