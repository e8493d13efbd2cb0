"""Transforms: H&E stain jitter, 90-degree turns, crop to foreground, the train transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2hed

from histoflow.config import AugmentConfig
from histoflow.data.transforms import (
    CropToForeground,
    RandomRot90,
    StainJitter,
    create_transform,
    foreground_box,
    hed_to_rgb,
    rgb_to_hed,
)


def _tissue(seed: int = 0) -> torch.Tensor:
    """A pink/purple H&E-like float image (3, 24, 24) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([0.8, 0.5, 0.7]).view(3, 1, 1)
    return (base + 0.1 * torch.rand(3, 24, 24, generator=g)).clamp(0, 1)


def test_hed_matches_skimage_and_inverts():
    image = _tissue()
    ours = rgb_to_hed(image)
    theirs = torch.from_numpy(rgb2hed(image.permute(1, 2, 0).double().numpy())).permute(2, 0, 1)
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(hed_to_rgb(rgb_to_hed(image, clip=False)), image, atol=1e-5, rtol=0)


def test_stain_jitter_keeps_shape_and_range_and_changes_colour():
    image = _tissue()
    torch.manual_seed(0)
    out = StainJitter(scale=0.2, shift=0.05)(image)
    assert out.shape == image.shape and out.dtype == image.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert (out - image).abs().mean() > 0.01
    # Still the same tissue: a per-stain change, not noise (structure is kept).
    assert torch.corrcoef(torch.stack([out[1].flatten(), image[1].flatten()]))[0, 1] > 0.9
    torch.testing.assert_close(StainJitter(0.0, 0.0)(image), image, atol=1e-5, rtol=0)


def test_rot90_is_exact():
    image = torch.arange(16.0).view(1, 4, 4)
    seen = {tuple(RandomRot90()(image).flatten().tolist()) for _ in range(40)}
    expected = {tuple(torch.rot90(image, k, (-2, -1)).flatten().tolist()) for k in range(4)}
    assert seen == expected


def test_crop_to_foreground_finds_the_box():
    scan = torch.zeros(3, 100, 80, dtype=torch.uint8)
    scan[:, 20:60, 10:50] = 120  # the head; the rest is scanner background
    scan[:, 0:5, 0:5] = 30  # dim noise below the threshold
    assert foreground_box(scan, margin=0.0) == (20, 10, 40, 40)
    assert foreground_box(scan, margin=0.05) == (15, 6, 50, 48)
    assert CropToForeground()(scan).shape[-2:] == (44, 44)  # default margin: 2% of 100, 80
    assert foreground_box(torch.zeros(3, 8, 8, dtype=torch.uint8)) is None
    assert CropToForeground()(torch.zeros(3, 8, 8, dtype=torch.uint8)).shape == (3, 8, 8)


def test_eval_transform_crops_to_foreground():
    scan = np.zeros((64, 64, 3), np.uint8)
    scan[16:48, 16:48] = 200
    image = Image.fromarray(scan)
    cropped = create_transform(32, train=False, crop_to_foreground=True)(image)
    plain = create_transform(32, train=False)(image)
    assert cropped.shape == plain.shape == (3, 32, 32)
    # After cropping, the bright box fills almost the whole image; without, a quarter of it.
    assert (cropped[0] > 0).float().mean() > 0.8
    assert (plain[0] > 0).float().mean() == pytest.approx(0.25, abs=0.05)


def test_train_transform_applies_every_augmentation():
    cfg = AugmentConfig(
        resized_crop=(0.5, 1.0),
        brightness=0.3,
        contrast=0.3,
        saturation=0.3,
        hue=0.05,
        stain_scale=0.1,
        stain_shift=0.02,
    )
    transform = create_transform(32, train=True, augment=cfg)
    names = [type(t).__name__ for t in transform.transforms]
    for name in (
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "RandomVerticalFlip",
        "RandomRot90",
        "ColorJitter",
        "StainJitter",
        "Normalize",
    ):
        assert name in names
    image = Image.fromarray((_tissue().permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    torch.manual_seed(0)
    a, b = transform(image), transform(image)
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert not torch.equal(a, b)  # random
    nothing = AugmentConfig(
        hflip=0,
        vflip=0,
        rot90=False,
        brightness=0,
        contrast=0,
        saturation=0,
        stain_scale=0,
        stain_shift=0,
    )
    off = create_transform(32, train=True, augment=nothing)
    assert torch.equal(off(image), create_transform(32, train=False)(image))
