"""Image transforms: decoding to a normalised tensor, training augmentations, MRI/CT cropping.

:func:`create_transform` builds the whole pipeline (timm's verb-noun factory) from the pieces
here. Every augmentation works on a float tensor (3, H, W) in [0, 1], except
:class:`CropToForeground`, which runs first on the decoded uint8 image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.transforms import v2

from histoflow.config import AugmentConfig

__all__ = [
    "FOREGROUND_MARGIN",
    "FOREGROUND_THRESHOLD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CropToForeground",
    "RandomRot90",
    "StainJitter",
    "create_transform",
    "decode_transform",
    "foreground_box",
    "hed_to_rgb",
    "rgb_to_hed",
    "train_augmentations",
]

# Normalisation of ImageNet-pretrained backbones, the default for every encoder.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Pixels brighter than this (greyscale, 0-255) are foreground: the brain MRI project thresholds
# at 45 after a blur, which separates the head from the scanner background.
FOREGROUND_THRESHOLD = 45
FOREGROUND_MARGIN = 0.02  # share of each side added around the box

# Ruifrok & Johnston's H&E-DAB stain vectors (rows: haematoxylin, eosin, DAB), exactly as
# skimage.color.rgb2hed; optical densities are scaled so that a transmission of 1e-6 is 1.
_RGB_FROM_HED = torch.tensor(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64
)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
_LOG_ADJUST = float(torch.log(torch.tensor(1e-6)))


def rgb_to_hed(rgb: torch.Tensor, *, clip: bool = True) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] -> (3, H, W) stain densities (H, E, D), like skimage's rgb2hed.

    ``clip=False`` keeps the negative densities of colours outside the stains' span, so that
    :func:`hed_to_rgb` inverts it exactly.
    """
    od = torch.log(rgb.clamp(min=1e-6)) / _LOG_ADJUST  # (3, H, W), 0 = white
    hed = torch.einsum("chw,cd->dhw", od, _HED_FROM_RGB.to(rgb))
    return hed.clamp(min=0) if clip else hed


def hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hed`: (3, H, W) stain densities -> RGB in [0, 1]."""
    od = torch.einsum("dhw,dc->chw", hed, _RGB_FROM_HED.to(hed))
    return torch.exp(od * _LOG_ADJUST).clamp(0, 1)


class StainJitter(nn.Module):
    """H&E stain augmentation (Tellez et al. 2018) in HED colour space.

    Each HED channel ``s`` becomes ``s * U(1 - scale, 1 + scale) + U(-shift, shift)``, then
    the image goes back to RGB.
    """

    def __init__(self, scale: float, shift: float):
        """Jitter each stain's density by up to ``scale`` (relative) and ``shift`` (absolute)."""
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Jitter a (3, H, W) RGB image in [0, 1]; the same dtype comes back."""
        hed = rgb_to_hed(image.float(), clip=False)
        alpha = 1 + (torch.rand(3, 1, 1) * 2 - 1) * self.scale
        beta = (torch.rand(3, 1, 1) * 2 - 1) * self.shift
        return hed_to_rgb(hed * alpha + beta).to(image.dtype)


class RandomRot90(nn.Module):
    """Rotate by a random multiple of 90 degrees (exact, no interpolation)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Turn a (..., H, W) image by 0, 90, 180 or 270 degrees, at random."""
        k = int(torch.randint(4, ()))
        return torch.rot90(image, k, dims=(-2, -1)) if k else image


def foreground_box(
    image: torch.Tensor,
    threshold: float = FOREGROUND_THRESHOLD,
    margin: float = FOREGROUND_MARGIN,
) -> tuple[int, int, int, int] | None:
    """Bounding box (top, left, height, width) of pixels above ``threshold``, with a margin.

    Args:
        image: (C, H, W) uint8 image (values 0-255).
        threshold: greyscale level (0-255) above which a pixel is foreground.
        margin: share of the image side added on every side of the box.

    Returns:
        The box, or None when no pixel is above the threshold.
    """
    grey = image.float().mean(0)  # (H, W)
    mask = grey > threshold
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    if rows.numel() == 0:
        return None
    h, w = grey.shape
    pad_y, pad_x = round(margin * h), round(margin * w)
    top, bottom = max(int(rows[0]) - pad_y, 0), min(int(rows[-1]) + 1 + pad_y, h)
    left, right = max(int(cols[0]) - pad_x, 0), min(int(cols[-1]) + 1 + pad_x, w)
    return top, left, bottom - top, right - left


class CropToForeground(nn.Module):
    """Crop a scan to the box around its above-threshold pixels (MRI/CT background removal)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Crop a (C, H, W) uint8 image to :func:`foreground_box`; an all-dark one stays whole."""
        box = foreground_box(image)
        if box is None:  # an all-dark image: nothing to crop to, keep it whole
            return image
        top, left, height, width = box
        return image[..., top : top + height, left : left + width]


def train_augmentations(cfg: AugmentConfig) -> list[nn.Module]:
    """The configured augmentations for float images in [0, 1], in the order they apply.

    The random resized crop is not here: it replaces the resize (see ``create_transform``).
    """
    ops: list[nn.Module] = []
    if cfg.hflip:
        ops.append(v2.RandomHorizontalFlip(cfg.hflip))
    if cfg.vflip:
        ops.append(v2.RandomVerticalFlip(cfg.vflip))
    if cfg.rot90:
        ops.append(RandomRot90())
    if cfg.brightness or cfg.contrast or cfg.saturation or cfg.hue:
        ops.append(v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue))
    if cfg.stain_scale or cfg.stain_shift:
        ops.append(StainJitter(cfg.stain_scale, cfg.stain_shift))
    return ops


def decode_transform(image_size: int, *, crop_to_foreground: bool = False) -> v2.Compose:
    """Decoded image -> (3, S, S) uint8 tensor: the start of :func:`create_transform` in eval mode.

    The stain normalisation target is fitted on tiles prepared by exactly these steps.
    """
    ops: list = [v2.ToImage()]
    if crop_to_foreground:
        ops.append(CropToForeground())
    ops.append(v2.Resize((image_size, image_size), antialias=True))
    return v2.Compose(ops)


def create_transform(
    image_size: int,
    *,
    train: bool,
    augment: AugmentConfig | None = None,
    crop_to_foreground: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    stain: nn.Module | None = None,
) -> v2.Compose:
    """Decode to a normalised float tensor (3, S, S), augmenting when training.

    Args:
        image_size: output side S in pixels.
        train: add ``augment``'s random transforms (random resized crop instead of the resize).
        augment: the augmentations; None = the defaults (flips, 90-degree turns, mild colour
            and stain jitter: those of params.yaml).
        crop_to_foreground: crop to the box of non-background pixels first (MRI/CT); a model
            trained with it records it and is always served with it.
        mean: per-channel mean of the backbone's normalisation.
        std: per-channel standard deviation of the backbone's normalisation.
        stain: the model's stain normaliser
            (:class:`~histoflow.data.stain_normalization.StainNormalizer`), applied to the
            resized uint8 tile, before any augmentation, in training and inference alike.
    """
    augment = augment or AugmentConfig()
    ops: list = [v2.ToImage()]
    if crop_to_foreground:
        ops.append(CropToForeground())
    if train and augment.resized_crop is not None:
        ops.append(v2.RandomResizedCrop(image_size, scale=augment.resized_crop, antialias=True))
    else:
        ops.append(v2.Resize((image_size, image_size), antialias=True))
    if stain is not None:
        ops.append(stain)
    ops.append(v2.ToDtype(torch.float32, scale=True))
    if train:
        ops += train_augmentations(augment)
    ops.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose(ops)
