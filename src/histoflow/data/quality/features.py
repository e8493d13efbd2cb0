"""Per-image quality and colour measurements: one row per file, for validation, captions and drift.

Every file gets a row, readable or not: an unreadable file (empty, truncated, not an image, or
with more pixels than ``max_pixels``, which is read from the header and never decoded) has
``readable=False``, the reason in ``error`` and NaN pixel features, so a bad file shows up in
the table instead of stopping the run.

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
- ``phash``: 64-bit perceptual hash of ``Y`` as 16 hex digits ('' when unreadable), as
  :func:`~histoflow.data.quality.hashing.perceptual_hash` computes it; re-encoded or slightly
  altered copies of a tile have a small :func:`~histoflow.data.quality.hashing.phash_distance`.

``bit_depth`` is the bits per channel of the image as Pillow stores it, filled whenever the
header can be read (like ``mode``): 1 for mode ``1``; 8 for ``L``, ``RGB``, ``RGBA``, ``P``,
``LA``, ``CMYK``; 16 for ``I;16*``; 32 for ``I`` and ``F``. Pillow opens 16-bit-per-channel
*colour* PNGs as 8-bit ``RGB``, so those read 8.

The morphology captioner measures with the same maps (:func:`colour_maps`,
:func:`stain_optical_density`) and reuses this row's values, so its caption cache is keyed by
this module's source. :func:`~histoflow.data.quality.table.feature_table` measures many files.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageMode
from skimage.color import hed_from_rgb

from histoflow.data.images import DEFAULT_MAX_PIXELS, ImageTooLarge, open_image
from histoflow.data.quality.hashing import perceptual_hash

__all__ = [
    "BACKGROUND_LUMINANCE",
    "BACKGROUND_SATURATION",
    "DRIFT_FEATURES",
    "INT_COLUMNS",
    "QC_COLUMNS",
    "colour_maps",
    "features_from_bytes",
    "image_features",
    "is_greyscale",
    "read_bytes",
    "stain_optical_density",
    "to_rgb_float",
    "unopenable_row",
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
# Columns that are integers when known, NaN otherwise: nullable Int64 in a table.
INT_COLUMNS: tuple[str, ...] = ("width", "height", "bytes", "bit_depth")

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Modes with one colour channel; everything else is converted through Pillow's RGB.
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# A file saved as RGB is still greyscale if no pixel's channels differ by more than JPEG
# rounding (a grey JPEG decodes with channels a level or two apart).
_GREY_TOLERANCE = 3 / 255
# Transmission floor for optical density: an 8-bit pixel cannot be darker than 1/255.
_MIN_TRANSMISSION = 1 / 255
_HED_FROM_RGB = hed_from_rgb.astype(np.float32)


def image_features(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Decode one image file and measure it; never raises for a bad file.

    Args:
        path: Image file (any format Pillow reads).
        max_pixels: An image with more pixels is not decoded (an unreadable row).

    Returns:
        A dict with exactly the keys of :data:`QC_COLUMNS`. For an unreadable file
        ``readable`` is False, ``error`` holds the decoder's message, ``phash`` is '' and the
        pixel features are NaN; ``format``, ``mode``, ``width``, ``height`` and ``bit_depth``
        are still filled when the header could be read, and ``sha256`` / ``bytes`` when the
        file could be opened at all.
    """
    try:
        data, _ = read_bytes(path)
    except OSError as exc:
        return unopenable_row(exc)
    return features_from_bytes(data, hashlib.sha256(data).hexdigest(), max_pixels=max_pixels)


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


def read_bytes(path: str | Path) -> tuple[bytes, os.stat_result]:
    """A file's bytes and its stat, from one open (the stat's size and mtime match the bytes).

    Raises:
        OSError: the file cannot be opened or read.
    """
    with open(path, "rb") as f:
        return f.read(), os.fstat(f.fileno())


def unopenable_row(exc: OSError | str) -> dict:
    """The row of a file that could not be opened: ``readable`` False, the reason in ``error``.

    Args:
        exc: The error opening it, or the reason as text.
    """
    row = _empty_row()
    row["error"] = f"cannot read file: {exc.strerror or exc}" if isinstance(exc, OSError) else exc
    return row


def features_from_bytes(data: bytes, sha256: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Decode and measure one file's bytes, as :func:`image_features` (which reads the file).

    The only place QC decodes pixels; a decoder failure marks the row unreadable, and so does
    a header declaring more than ``max_pixels`` pixels (then nothing is decoded).

    Args:
        data: The file's content.
        sha256: Hex digest of ``data`` (the caller has usually computed it already).
        max_pixels: Most pixels an image may have.
    """
    row = _empty_row()
    row["bytes"] = len(data)
    row["sha256"] = sha256
    buffer = io.BytesIO(data)
    try:
        with open_image(buffer, max_pixels=max_pixels, name="") as img:
            row.update(format=img.format or "", mode=img.mode, width=img.width, height=img.height)
            row["bit_depth"] = _bit_depth(img.mode)
            img.load()  # decode in full: a truncated file fails here, not at open
            rgb = to_rgb_float(img)
            grey = is_greyscale(img.mode, rgb)
    except ImageTooLarge as exc:  # the header is all that was read
        if exc.size:
            row.update(width=exc.size[0], height=exc.size[1])
        row["error"] = str(exc)
        return row
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
    row.update(phash="", **dict.fromkeys((*INT_COLUMNS, *DRIFT_FEATURES), nan))
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
        "phash": perceptual_hash(lum),
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


def _channel_range(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Pairwise maximum over the three channel planes: ~20x faster than rgb.max(axis=-1),
    # which reduces over a length-3 axis pixel by pixel.
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
