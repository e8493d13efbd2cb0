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
from collections.abc import Callable, Sequence
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
from histoflow.data.manifest import read_manifest
from histoflow.io import atomic_path

__all__ = ["CACHE_NAME", "COLUMNS", "PARAMS", "Inputs", "Outputs", "run"]

PARAMS = ("captions", "data.max_pixels")
CACHE_NAME = ".caption_cache.sqlite"  # in the folder of Outputs.captions
_CSV_CHUNK = 8192  # manifest rows written to captions.csv at a time
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

    Returns:
        Metrics: ``n_images`` (manifest rows), ``n_unique`` (distinct sha256), ``n_cached``
        (found in the cache), ``n_new`` (captioned now), ``backend``, ``model`` and
        ``seconds``.
    """
    started = time.perf_counter()
    from histoflow.captions.morphology import QC_REUSED

    # What captioning reads of validate's table: the morphology captioner reuses a few QC values.
    manifest = read_manifest(inputs.manifest, ("sha256", "path", "label", *QC_REUSED))
    key = key_for(cfg.captions)
    # One row per distinct content: duplicates share a caption.
    first = manifest.drop_duplicates("sha256").set_index("sha256")

    with CaptionCache(outputs.captions.parent / CACHE_NAME) as cache:
        n_cached = cache.count(first.index, key)
        if n_cached < len(first):
            key, n_cached = _fill_cache(
                cache, key, first, inputs.data, cfg.captions, cfg.data.max_pixels
            )
        n_unique = len(first)
        del first
        # The CSV always comes from the cache, as a resumed run's, a chunk of rows at a time:
        # every caption in memory at once held kilobytes per tile.
        with atomic_path(outputs.captions) as tmp, tmp.open("w", newline="") as out:
            for start in range(0, max(len(manifest), 1), _CSV_CHUNK):
                rows = manifest.iloc[start : start + _CSV_CHUNK]
                _with_captions(rows, cache, key).to_csv(out, header=start == 0, index=False)
        write_gallery(
            manifest[["sha256", "path", "label"]].assign(backend=key.backend, model=key.model_id),
            outputs.gallery,
            data_root=inputs.data,
            per_class=cfg.captions.gallery_per_class,
            max_pixels=cfg.data.max_pixels,
            captions=lambda shown: _with_captions(shown, cache, key)["caption"],
        )
    return {
        "n_images": len(manifest),
        "n_unique": n_unique,
        "n_cached": n_cached,
        "n_new": n_unique - n_cached,
        "backend": key.backend,
        "model": key.model_id,
        "seconds": round(time.perf_counter() - started, 3),
    }


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
    first: pd.DataFrame,
    data: Path,
    captions: CaptionsConfig,
    max_pixels: int,
) -> tuple[CacheKey, int]:
    """Caption the images of ``first`` (manifest rows indexed by sha256) missing from the cache.

    Each batch is stored as soon as it is captioned, so an interrupted run keeps its work.

    Returns:
        The key the captions are stored under (the loaded model's, see :func:`_load_captioner`)
        and how many of the images were already cached under it.
    """
    caption_batch, key = _load_captioner(captions, key)
    cached = cache.cached(first.index, key)  # again: the key may have changed
    missing = first[~first.index.isin(cached)]
    del cached
    shas, size = list(missing.index), captions.batch_size
    with tqdm(total=len(shas), desc=f"captions ({key.backend})", unit="img") as bar:
        for start in range(0, len(shas), size):
            # One batch's rows as dicts at a time: every row at once held kilobytes per tile.
            batch = missing.iloc[start : start + size].to_dict("records")
            images = [load_rgb(data / row["path"], max_pixels=max_pixels) for row in batch]
            texts = caption_batch(images, batch)
            if len(texts) != len(images):
                raise RuntimeError(
                    f"captioner {key.backend!r} returned {len(texts)} captions for "
                    f"{len(images)} images; it must return one caption per image"
                )
            cache.put_many(dict(zip(shas[start : start + size], texts, strict=True)), key)
            bar.update(len(images))
    return key, len(first) - len(missing)


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
