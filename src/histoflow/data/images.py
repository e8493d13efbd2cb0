"""Image files: which suffixes count as images, and decoding them to 8-bit RGB with PIL only.

Every image histoflow decodes is opened here (:func:`open_image`), and its pixel count is read
from the header and checked against a limit before a single pixel is decoded: a PNG of a few
KB can declare 12000 x 12000 pixels and take gigabytes once decoded (a decompression bomb).
Too many pixels raise :class:`ImageTooLarge`, naming the file and the limit.

Apart from the torch datasets (:mod:`histoflow.data.datasets`) so that what only reads images
(the captions stage and its gallery, the MLflow model's input decoding, the monitoring flow)
does not import torch and torchvision: 5 s and 600 MiB per process here.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from PIL import Image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "ImageTooLarge",
    "decode_rgb",
    "load_rgb",
    "open_image",
    "to_rgb",
]

# File suffixes read as images (compared lower-case) when scanning a folder.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})

# data.max_pixels' default: 4096 x 4096, 8x the largest brain MRI slice seen (1375 x 1446),
# 52x a BreakHis image (700 x 460), 16x a 1024 px tile. One such image is 48 MiB as 8-bit
# RGB and 192 MiB as the float32 RGB that QC measures; a 12000 x 12000 bomb is 9x over it.
DEFAULT_MAX_PIXELS = 4096 * 4096


class ImageTooLarge(ValueError):
    """An image whose header declares more pixels than the limit; nothing was decoded.

    Attributes:
        name: The file (or input row) it came from.
        size: ``(width, height)`` from the header; None when Pillow refused the header itself.
        max_pixels: The limit it broke.
    """

    def __init__(self, name: str, size: tuple[int, int] | None, max_pixels: int):
        self.name, self.size, self.max_pixels = name, size, max_pixels
        found = f"{size[0]} x {size[1]} = {size[0] * size[1]:,}" if size else "beyond Pillow's"
        super().__init__(
            f"{name + ': ' if name else ''}image is {found} pixels, more than the limit of {max_pixels:,} "
            "(data.max_pixels); it was not decoded. Tile or downscale it, or raise "
            "data.max_pixels (a trained model keeps the limit it was trained with)"
        )


@contextlib.contextmanager
def open_image(
    source: str | Path | IO[bytes],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> Iterator[Image.Image]:
    """Open an image lazily (header only) and yield it once its pixel count is within the limit.

    Args:
        source: A file path or a binary file object.
        max_pixels: Most pixels (width x height) allowed.
        name: What to call the image in the error (default: the path; "" for nothing).

    Raises:
        ImageTooLarge: the header declares more than ``max_pixels`` pixels (or more than
            Pillow's own hard limit, twice ``PIL.Image.MAX_IMAGE_PIXELS``).
        OSError: Pillow cannot read the header (not an image, or an unknown format).
    """
    name = str(source) if name is None else name
    with warnings.catch_warnings():
        # Pillow's own bomb warning (above 89 M pixels) is redundant: the limit is checked here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(source)
        except Image.DecompressionBombError:
            raise ImageTooLarge(name, None, max_pixels) from None
    with img:
        if img.width * img.height > max_pixels:
            raise ImageTooLarge(name, img.size, max_pixels)
        yield img


def load_rgb(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image file as RGB (greyscale and RGBA are converted), fully decoded.

    Raises:
        ImageTooLarge: more than ``max_pixels`` pixels (checked before decoding).
    """
    with open_image(path, max_pixels=max_pixels) as img:
        img.load()
        return to_rgb(img)


def decode_rgb(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str) -> Image.Image:
    """Decode an image file's bytes (e.g. a request's base64 payload) as :func:`load_rgb` does.

    Raises:
        ImageTooLarge: more than ``max_pixels`` pixels (checked before decoding).
    """
    with open_image(io.BytesIO(data), max_pixels=max_pixels, name=name) as img:
        img.load()
        return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL image (greyscale, RGBA, 16-bit) to 8-bit RGB."""
    if img.mode in ("I;16", "I", "F"):  # 16-bit or float radiology images: rescale to 8 bit
        import numpy as np

        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo or 1.0) * 255.0
        img = Image.fromarray(arr.astype("uint8"))
    return img.convert("RGB")
