"""Torch datasets and transforms for image tiles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from histoflow.config import AugmentConfig
from histoflow.data.augment import CropToForeground, train_augmentations
from histoflow.data.images import load_rgb

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TileDataset", "create_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def create_transform(
    image_size: int,
    *,
    train: bool,
    augment: AugmentConfig | None = None,
    crop_to_foreground: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Decode to a normalised float tensor (3, S, S), augmenting when training.

    Args:
        image_size: output side S in pixels.
        train: add ``augment``'s random transforms (random resized crop instead of the resize).
        augment: the augmentations; None = the defaults (flips, 90-degree turns, mild colour
            and stain jitter: those of params.yaml).
        crop_to_foreground: crop to the box of non-background pixels first (MRI/CT); a model
            trained with it records it and is always served with it.
        mean, std: normalisation of the backbone.
    """
    augment = augment or AugmentConfig()
    ops: list = [v2.ToImage()]
    if crop_to_foreground:
        ops.append(CropToForeground())
    if train and augment.resized_crop is not None:
        ops.append(v2.RandomResizedCrop(image_size, scale=augment.resized_crop, antialias=True))
    else:
        ops.append(v2.Resize((image_size, image_size), antialias=True))
    ops.append(v2.ToDtype(torch.float32, scale=True))
    if train:
        ops += train_augmentations(augment)
    ops.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose(ops)


class TileDataset(Dataset):
    """Images under ``root`` with optional integer labels (-1 when None)."""

    def __init__(
        self,
        root: Path,
        paths: Sequence[str],
        labels: Sequence[int] | None,
        transform: v2.Compose,
        *,
        return_index: bool = False,
    ):
        self.root = Path(root)
        self.paths = list(paths)
        self.labels = None if labels is None else list(labels)
        self.transform = transform
        self.return_index = return_index  # items (image, label, index): to name bad samples

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple:
        image = self.transform(load_rgb(self.root / self.paths[i]))
        label = -1 if self.labels is None else self.labels[i]
        return (image, label, i) if self.return_index else (image, label)
