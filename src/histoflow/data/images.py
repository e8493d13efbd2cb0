"""Image files: which suffixes count as images, and decoding them to 8-bit RGB with PIL only.

Apart from the torch datasets (:mod:`histoflow.data.datasets`) so that what only reads images
(the captions stage and its gallery, the MLflow model's input decoding, the monitoring flow)
does not import torch and torchvision: 5 s and 600 MiB per process here.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

__all__ = ["IMAGE_SUFFIXES", "load_rgb", "to_rgb"]

# File suffixes read as images (compared lower-case) when scanning a folder.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image as RGB (greyscale and RGBA are converted), fully decoded."""
    with Image.open(path) as img:
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
