"""Per-image quality and colour features: one row per file, for validation, captions and drift.

Every file gets a row, readable or not: an unreadable file (empty, truncated, not an image) has
``readable=False``, the decoder's message in ``error`` and NaN pixel features, so a bad file
shows up in the table instead of stopping the run.

Pixel features are computed on the image as RGB floats in [0, 1]:

- luminance ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, as Pillow's mode ``L``);
- ``brightness`` / ``contrast``: mean / standard deviation of ``Y``;
- ``blur``: variance of the Laplacian of ``Y`` on a 0-255 scale (low means blurred);
- ``saturation``: mean HSV saturation ``(max - min) / max``;
- ``tissue_fraction``: share of pixels that are not background, where background is a pixel
  that is bright *and* unsaturated: ``Y > 0.85 and saturation < 0.1`` (glass, white paper);
- ``od_hematoxylin`` / ``od_eosin``: mean optical density (log10) of the H and E channels of
  Ruifrok-Johnston colour deconvolution (:func:`stain_optical_density`) over tissue pixels;
  NaN for greyscale images and for images without tissue;
- ``phash``: 64-bit perceptual hash of ``Y`` as 16 hex digits ('' when unreadable): ``Y``
  area-averaged to 32x32, its 2-D DCT-II (orthonormal), the top-left 8x8 block row by row,
  a bit set where the coefficient exceeds the median of the block without its DC term.
  Re-encoded or slightly altered copies of a tile have a small :func:`phash_distance`.

``bit_depth`` is the bits per channel of the image as Pillow stores it, filled whenever the
header can be read (like ``mode``): 1 for mode ``1``; 8 for ``L``, ``RGB``, ``RGBA``, ``P``,
``LA``, ``CMYK``; 16 for ``I;16*``; 32 for ``I`` and ``F``. Pillow opens 16-bit-per-channel
*colour* PNGs as 8-bit ``RGB``, so those read 8.

:func:`feature_table` measures many files, optionally in worker processes and with a parquet
cache keyed by path, size, mtime and content hash, so that a re-run decodes only what changed.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageMode
from scipy.fft import dct
from skimage.color import hed_from_rgb
from tqdm.auto import tqdm

from histoflow.io import atomic_path

__all__ = [
    "BACKGROUND_LUMINANCE",
    "BACKGROUND_SATURATION",
    "DRIFT_FEATURES",
    "QC_COLUMNS",
    "colour_maps",
    "feature_table",
    "image_features",
    "is_greyscale",
    "phash_distance",
    "stain_optical_density",
    "to_rgb_float",
]

BACKGROUND_LUMINANCE = 0.85
BACKGROUND_SATURATION = 0.1

DRIFT_FEATURES: tuple[str, ...] = (
    "brightness",
    "contrast",
    "blur",
    "tissue_fraction",
    "mean_r",
    "mean_g",
    "mean_b",
    "od_hematoxylin",
    "od_eosin",
    "saturation",
)
QC_COLUMNS: tuple[str, ...] = (
    "readable",
    "error",
    "format",
    "mode",
    "width",
    "height",
    "bytes",
    "sha256",
    "bit_depth",
    "phash",
    *DRIFT_FEATURES,
)

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Modes with one colour channel; everything else is converted through Pillow's RGB.
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# A file saved as RGB is still greyscale if no pixel's channels differ by more than JPEG
# rounding (a grey JPEG decodes with channels a level or two apart).
_GREY_TOLERANCE = 3 / 255
# Transmission floor for optical density: an 8-bit pixel cannot be darker than 1/255.
_MIN_TRANSMISSION = 1 / 255
_HED_FROM_RGB = hed_from_rgb.astype(np.float32)

# Columns that are integers when known, NaN otherwise: nullable Int64 in the table.
_INT_COLUMNS = ("width", "height", "bytes", "bit_depth")
# Perceptual hash: luminance area-averaged to 32x32 (a fixed filter, so hashes compare across
# runs and image sizes), then the signs of the 8x8 lowest DCT frequencies against their median.
_PHASH_SIZE = 32
_PHASH_BLOCK = 8
_PHASH_HEX = _PHASH_BLOCK * _PHASH_BLOCK // 4
# Cache-only column: with the path, size and sha256 it decides whether a cached row is current.
_CACHE_KEY = "mtime_ns"
# Worker processes fork from a clean server process ("forkserver"), never from the caller: the
# caller may hold torch, CUDA or BLAS thread pools, and forking a process with running threads
# can copy a held lock into the child and hang it (Python 3.12 warns about it, 3.14 made
# forkserver the default). The server imports this module once (see _imap), so a pool starts
# in ~0.3 s after the first (~1.5 s) instead of ~4 s of imports per worker with "spawn" or a
# bare forkserver; "fork" starts in ~0.3 s too but inherits the caller's threads.
_MP_CONTEXT = "forkserver"
_MAX_CHUNKSIZE = 64
_worker_limits = None  # keeps the worker's threadpoolctl limits alive


def image_features(path: Path) -> dict:
    """Decode one image file and measure it; never raises for a bad file.

    Args:
        path: Image file (any format Pillow reads).

    Returns:
        A dict with exactly the keys of :data:`QC_COLUMNS`. For an unreadable file
        ``readable`` is False, ``error`` holds the decoder's message, ``phash`` is '' and the
        pixel features are NaN; ``format``, ``mode``, ``width``, ``height`` and ``bit_depth``
        are still filled when the header could be read, and ``sha256`` / ``bytes`` when the
        file could be opened at all.
    """
    try:
        data, _ = _read(path)
    except OSError as exc:
        return _unopenable_row(exc)
    return _features_of(data, hashlib.sha256(data).hexdigest())


def feature_table(
    paths: Iterable[Path],
    *,
    workers: int = 0,
    cache: Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Measure many images into a table, one image in memory per process at a time.

    Args:
        paths: Image files; streamed, so a generator over a large folder is fine.
        workers: Decode in this many worker processes (0: in this process). Rows come back in
            the order of ``paths`` either way.
        cache: Parquet file of rows from earlier runs. A path's cached row is reused when the
            file's size and mtime match *and* the sha256 of its current bytes equals the
            cached one (hashing is much cheaper than decoding); other paths are measured
            again. The file is then rewritten with the rows of this run's paths only, plus
            an ``mtime_ns`` column. A missing cache is created; an unreadable one is ignored
            with a warning. The returned table is the same with or without a cache.
        progress: Show a tqdm progress bar.

    Returns:
        One row per path: a leading ``path`` column (``str(path)``) then :data:`QC_COLUMNS`.
        ``width``, ``height``, ``bytes`` and ``bit_depth`` are nullable integers (``Int64``)
        so the dtype does not change when an unreadable file is present.

    Raises:
        ValueError: ``workers`` is negative.
    """
    if workers < 0:
        raise ValueError(f"workers must be 0 (in-process) or a number of processes, got {workers}")
    total = len(paths) if hasattr(paths, "__len__") else None
    cached_rows, cached_keys = _read_cache(Path(cache)) if cache is not None else ({}, {})
    jobs = ((str(path), cached_keys.get(str(path))) for path in paths)

    rows, mtimes = [], []
    results = _imap(_measure, jobs, workers=workers, total=total)
    for path, row, mtime_ns in tqdm(
        results, total=total, desc="qc", unit="img", disable=not progress
    ):
        rows.append({"path": path, **(cached_rows[path] if row is None else row)})
        mtimes.append(mtime_ns)
    table = _to_table(rows)
    if cache is not None:
        _write_cache(Path(cache), table, mtimes)
    return table


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


def to_rgb_float(img: Image.Image) -> np.ndarray:
    """Convert a decoded image to RGB floats in [0, 1].

    16-bit and 32-bit integer images are scaled by 65535 (medical PNGs and TIFFs are 16-bit),
    float images are clipped to [0, 1]; alpha is dropped.

    Returns:
        Array of shape (H, W, 3), float32.
    """
    if img.mode.startswith("I") or img.mode == "F":
        scale = 1.0 if img.mode == "F" else 65535.0
        grey = np.clip(np.asarray(img, dtype=np.float32) / scale, 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=-1)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.float32) / 255.0


def is_greyscale(mode: str, rgb: np.ndarray) -> bool:
    """Whether an image carries no colour: a one-channel mode, or RGB with equal channels.

    Args:
        mode: Pillow mode of the file as stored.
        rgb: Pixels as returned by :func:`to_rgb_float`, shape (H, W, 3).
    """
    if mode in _GREY_MODES:
        return True
    high, low = _channel_range(rgb)
    return bool((high - low).max(initial=0.0) <= _GREY_TOLERANCE)


def colour_maps(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel luminance, HSV saturation and tissue mask.

    Args:
        rgb: RGB floats in [0, 1], shape (H, W, 3).

    Returns:
        ``(luminance, saturation, tissue)``, each of shape (H, W); ``tissue`` is boolean and
        False for background pixels (``luminance > 0.85 and saturation < 0.1``).
    """
    lum = rgb @ _LUMA
    high, low = _channel_range(rgb)
    sat = np.divide(high - low, high, out=np.zeros_like(high), where=high > 0)
    tissue = ~((lum > BACKGROUND_LUMINANCE) & (sat < BACKGROUND_SATURATION))
    return lum, sat, tissue


def stain_optical_density(rgb: np.ndarray) -> np.ndarray:
    """Colour deconvolution of an H&E image into stain optical densities.

    Uses the Ruifrok-Johnston stain vectors of :func:`skimage.color.rgb2hed`, but keeps
    optical density in its usual log10 units (skimage divides by ``ln 1e-6`` instead), so a
    haematoxylin-dark nucleus is about 0.4-0.8 and pink stroma's eosin about 0.1-0.2.

    Args:
        rgb: RGB floats in [0, 1], shape (..., 3).

    Returns:
        Non-negative optical densities of (haematoxylin, eosin, DAB), shape (..., 3), float32.
    """
    od = -np.log10(np.clip(rgb, _MIN_TRANSMISSION, 1.0))
    return np.maximum(od @ _HED_FROM_RGB, 0.0)


def _read(path: str | Path) -> tuple[bytes, os.stat_result]:
    with open(path, "rb") as f:
        return f.read(), os.fstat(f.fileno())


def _unopenable_row(exc: OSError) -> dict:
    row = _empty_row()
    row["error"] = f"cannot read file: {exc.strerror or exc}"
    return row


def _features_of(data: bytes, sha256: str) -> dict:
    # Decodes and measures one file's bytes; the only place pixels are decoded.
    row = _empty_row()
    row["bytes"] = len(data)
    row["sha256"] = sha256
    buffer = io.BytesIO(data)
    try:
        with Image.open(buffer) as img:
            row.update(format=img.format or "", mode=img.mode, width=img.width, height=img.height)
            row["bit_depth"] = _bit_depth(img.mode)
            img.load()  # decode in full: a truncated file fails here, not at open
            rgb = to_rgb_float(img)
            grey = is_greyscale(img.mode, rgb)
    except Exception as exc:  # any decoder failure marks the file unreadable
        # Pillow puts the BytesIO repr into some messages; drop it so equal errors read alike.
        message = str(exc).replace(repr(buffer), "").strip() or type(exc).__name__
        row["error"] = message
        return row

    row["readable"] = True
    row.update(_pixel_features(rgb, grey))
    return row


def _bit_depth(mode: str) -> int | float:
    if mode == "1":
        return 1  # stored as one byte per pixel by Pillow, but one bit in the file
    try:
        return np.dtype(ImageMode.getmode(mode).typestr).itemsize * 8
    except (KeyError, TypeError):
        return math.nan


def _empty_row() -> dict:
    nan = math.nan
    row: dict = {"readable": False, "error": "", "format": "", "mode": "", "sha256": ""}
    row.update(phash="", **dict.fromkeys((*_INT_COLUMNS, *DRIFT_FEATURES), nan))
    return {key: row[key] for key in QC_COLUMNS}


def _pixel_features(rgb: np.ndarray, grey: bool) -> dict:
    # rgb: (H, W, 3) float32 in [0, 1]
    lum, sat, tissue = colour_maps(rgb)  # each (H, W)
    # float64 for the statistics: variances sum many small squared differences.
    lum64 = lum.astype(np.float64)
    # Column sums as a product with ones: numpy reduces an (N, 3) array over axis 0 ~5x slower.
    pixels = rgb.reshape(-1, 3).astype(np.float64)  # (N, 3)
    mean_rgb = np.ones(len(pixels)) @ pixels / len(pixels)

    od_h = od_e = math.nan
    if not grey and tissue.any():
        hed = stain_optical_density(rgb[tissue])  # (N_tissue, 3)
        od_h, od_e = (float(v) for v in hed[:, :2].mean(axis=0, dtype=np.float64))
    return {
        "phash": _phash(lum),
        "brightness": float(lum64.mean()),
        "contrast": math.sqrt(_variance(lum64)),
        "blur": _variance(_laplacian(lum64 * 255.0)),
        "tissue_fraction": float(np.count_nonzero(tissue) / tissue.size),
        "mean_r": float(mean_rgb[0]),
        "mean_g": float(mean_rgb[1]),
        "mean_b": float(mean_rgb[2]),
        "od_hematoxylin": od_h,
        "od_eosin": od_e,
        "saturation": float(sat.mean(dtype=np.float64)),
    }


def _variance(values: np.ndarray) -> float:
    # Population variance, as ndarray.var, in one pass over the deviations.
    deviations = values.ravel() - values.mean()
    return float(deviations @ deviations) / deviations.size


def _laplacian(image: np.ndarray) -> np.ndarray:
    # 4-neighbour Laplacian of an (H, W) image with mirrored edges, the same as
    # scipy.ndimage.laplace (whose "reflect" mode repeats the edge pixel), by shifted adds:
    # ~4x faster than ndimage on small tiles.
    out = -4.0 * image
    out[1:] += image[:-1]
    out[:-1] += image[1:]
    out[0] += image[0]
    out[-1] += image[-1]
    out[:, 1:] += image[:, :-1]
    out[:, :-1] += image[:, 1:]
    out[:, 0] += image[:, 0]
    out[:, -1] += image[:, -1]
    return out


def _phash(lum: np.ndarray) -> str:
    # lum: (H, W) luminance in [0, 1]. The 8x8 lowest frequencies of the 2-D DCT of lum
    # area-averaged to 32x32, as one projection per axis: (8, H) @ (H, W) @ (W, 8).
    height, width = lum.shape
    block = _phash_projection(height) @ lum.astype(np.float64) @ _phash_projection(width).T
    coefficients = block.ravel()  # (64,), DC first
    # The DC term is the mean brightness, far above the rest: leave it out of the threshold.
    # The median of the other 63 is the 32nd smallest.
    threshold = np.sort(coefficients[1:])[(coefficients.size - 1) // 2]
    return np.packbits(coefficients > threshold).tobytes().hex()


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


def _channel_range(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Pairwise maximum over the three channel planes: ~20x faster than rgb.max(axis=-1),
    # which reduces over a length-3 axis pixel by pixel.
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)


# --- many files: workers and cache --------------------------------------------------------


def _measure(job: tuple[str, tuple | None]) -> tuple[str, dict | None, int | None]:
    """Row for one path, or None when the cached row is still current; runs in the workers.

    ``job`` is ``(path, expected)`` with ``expected = (bytes, mtime_ns, sha256)`` of the
    cached row, or None. Returns ``(path, row or None, mtime_ns or None)``.
    """
    path, expected = job
    try:
        data, stat = _read(path)
    except OSError as exc:
        return path, _unopenable_row(exc), None
    sha256 = hashlib.sha256(data).hexdigest()
    if expected == (len(data), stat.st_mtime_ns, sha256):
        return path, None, stat.st_mtime_ns
    return path, _features_of(data, sha256), stat.st_mtime_ns


def _imap(func: Callable, jobs: Iterable, *, workers: int, total: int | None) -> Iterator:
    # Results in the order of jobs. Pool.imap reads jobs ahead (they are only paths) and hands
    # back rows, so no decoded image ever crosses a process boundary.
    if workers == 0:
        yield from map(func, jobs)
        return
    # Chunks amortise the inter-process round trip; several per worker keep the tail short.
    if total is None:
        chunksize = _MAX_CHUNKSIZE // 4
    else:
        chunksize = max(1, min(_MAX_CHUNKSIZE, total // (4 * workers)))
    context = multiprocessing.get_context(_MP_CONTEXT)
    if _MP_CONTEXT == "forkserver":
        # Takes effect when the server first starts; "__main__" is the default preload.
        context.set_forkserver_preload(["__main__", __name__])
    with context.Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap(func, jobs, chunksize=chunksize)


def _init_worker() -> None:
    # Each worker already keeps a core busy; BLAS threads inside it would oversubscribe.
    global _worker_limits
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: numpy's own matmuls here are too small to thread anyway
        return
    _worker_limits = threadpool_limits(limits=1)


def _to_table(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=["path", *QC_COLUMNS])
    return table.astype(
        {
            "readable": bool,
            **dict.fromkeys(_INT_COLUMNS, "Int64"),
            **dict.fromkeys(DRIFT_FEATURES, "float64"),
        }
    )


def _read_cache(path: Path) -> tuple[dict[str, dict], dict[str, tuple]]:
    # Returns (rows by path, (bytes, mtime_ns, sha256) by path); empty when there is no cache.
    if not path.exists():
        return {}, {}
    try:
        table = pd.read_parquet(path)
        missing = sorted({"path", _CACHE_KEY, *QC_COLUMNS} - set(table.columns))
        if missing:
            raise ValueError(f"columns {missing} are missing (written by another version?)")
        table = table.drop_duplicates("path", keep="last")
        # NaN, not pd.NA, for unknown integers: cached rows then build the same table as
        # freshly measured ones.
        table = table.astype(dict.fromkeys(_INT_COLUMNS, "float64"))
        keys = {
            path: (int(size), int(mtime_ns), sha256)
            for path, size, mtime_ns, sha256 in zip(
                table["path"], table["bytes"], table[_CACHE_KEY], table["sha256"], strict=True
            )
            if pd.notna(size) and pd.notna(mtime_ns)
        }
        rows = dict(zip(table["path"], table[list(QC_COLUMNS)].to_dict("records"), strict=True))
    except Exception as exc:  # a bad cache only costs time: measure everything again
        warnings.warn(
            f"ignoring the QC cache {path}: {exc}; every image is measured again and the "
            "cache rewritten",
            stacklevel=3,
        )
        return {}, {}
    return rows, keys


def _write_cache(path: Path, table: pd.DataFrame, mtimes: list[int | None]) -> None:
    cached = table.assign(**{_CACHE_KEY: pd.array(mtimes, dtype="Int64")})
    cached = cached.drop_duplicates("path", keep="last")
    try:
        with atomic_path(path) as tmp:
            cached.to_parquet(tmp, index=False)
    except OSError as exc:  # the table is already measured; a later run just recomputes
        warnings.warn(f"could not write the QC cache {path}: {exc}", stacklevel=3)
