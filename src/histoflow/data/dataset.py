"""Torch datasets and transforms for image tiles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TileDataset", "create_transform", "load_rgb", "to_rgb"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def create_transform(image_size: int, *, train: bool) -> v2.Compose:
    """Resize, (flip and rotate when training), to normalised float tensor (3, S, S)."""
    ops: list = [v2.ToImage(), v2.Resize((image_size, image_size), antialias=True)]
    if train:
        # Tissue tiles have no canonical orientation: flips and 90-degree turns are free data.
        ops += [
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomChoice([v2.RandomRotation((a, a)) for a in (0, 90, 180, 270)]),
        ]
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(ops)


class TileDataset(Dataset):
    """Images under ``root`` with optional integer labels."""

    def __init__(
        self,
        root: Path,
        paths: Sequence[str],
        labels: Sequence[int] | None,
        transform: v2.Compose,
    ):
        self.root = Path(root)
        self.paths = list(paths)
        self.labels = None if labels is None else list(labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.transform(load_rgb(self.root / self.paths[i]))
        return image, (-1 if self.labels is None else self.labels[i])
