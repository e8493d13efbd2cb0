"""Tests for histoflow.captions.morphology on synthetic tiles drawn here."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from PIL import Image

from histoflow.captions.morphology import MEASUREMENTS, MorphologyCaptioner

PINK = (235, 160, 200)
PURPLE = (70, 40, 120)
WHITE = (250, 250, 250)


def _tile(
    centres: list[tuple[float, float]],
    radius: float,
    *,
    size: int = 64,
    background: tuple[int, int, int] = PINK,
    seed: int = 0,
) -> Image.Image:
    """Purple discs ("nuclei") of one radius on a flat background, with mild noise."""
    rng = np.random.default_rng(seed)
    pixels = np.empty((size, size, 3), dtype=np.float64)  # (H, W, 3)
    pixels[:] = background
    yy, xx = np.mgrid[:size, :size]
    for cy, cx in centres:
        pixels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = PURPLE
    pixels += rng.normal(0, 4, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _grid(step: int, size: int = 64, seed: int = 0) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    return [
        (y + rng.uniform(-1, 1), x + rng.uniform(-1, 1))
        for y in range(step // 2, size, step)
        for x in range(step // 2, size, step)
    ]


def _number(caption: str, pattern: str) -> float:
    match = re.search(pattern, caption)
    assert match, f"{pattern!r} not in {caption!r}"
    return float(match.group(1))


@pytest.fixture(scope="module")
def captioner() -> MorphologyCaptioner:
    return MorphologyCaptioner()


def test_dense_small_nuclei_vs_few_large_nuclei(captioner: MorphologyCaptioner) -> None:
    dense = _tile(_grid(9), radius=2.5)  # 49 small nuclei
    sparse = _tile([(16, 16), (20, 48), (48, 32)], radius=8)  # 3 large nuclei

    dense_caption, sparse_caption = captioner(dense), captioner(sparse)

    assert dense_caption.startswith("densely cellular")
    assert sparse_caption.startswith("sparsely cellular")
    assert "small" in dense_caption and "large" in sparse_caption
    dense_count = _number(dense_caption, r"(\d+) nuclei")
    sparse_count = _number(sparse_caption, r"(\d+) nuclei")
    assert dense_count > 40 and sparse_count == 3
    assert _number(dense_caption, r"density (\d+)") > _number(sparse_caption, r"density (\d+)")
    assert _number(dense_caption, r"mean area (\d+)") < _number(sparse_caption, r"mean area (\d+)")
    assert len(dense_caption.split()) < 60


def test_measurements_follow_the_drawing(captioner: MorphologyCaptioner) -> None:
    sparse = captioner.measure(_tile([(16, 16), (20, 48), (48, 32)], radius=8))

    assert tuple(sparse) == MEASUREMENTS
    assert sparse["he_like"] == 1.0
    assert sparse["nuclei_count"] == 3
    assert sparse["nuclear_area_mean"] == pytest.approx(math.pi * 8**2, rel=0.1)
    assert sparse["eccentricity_mean"] < 0.3  # discs
    assert sparse["solidity_mean"] > 0.85  # pixel-square hull: a digital disc is not convex
    assert sparse["stroma_fraction"] > 0.8
    assert math.isnan(sparse["symmetry"])  # greyscale-only measurement


def test_mostly_white_with_pink_reads_as_acellular_stroma(captioner: MorphologyCaptioner) -> None:
    pixels = np.full((64, 64, 3), WHITE, dtype=np.uint8)
    pixels[20:44, 8:56] = PINK  # a strip of stroma, 28% of the tile
    caption = captioner(Image.fromarray(pixels))

    assert caption.startswith("acellular tissue (28% of area)")
    assert "no nuclei" in caption
    assert "eosinophilic stroma" in caption


def test_all_white_is_background(captioner: MorphologyCaptioner) -> None:
    caption = captioner(Image.new("RGB", (64, 64), WHITE))
    assert caption.startswith("no tissue")
    assert "background" in caption


def test_pleomorphic_nuclei_are_called_pleomorphic(captioner: MorphologyCaptioner) -> None:
    pixels = np.empty((64, 64, 3), dtype=np.uint8)
    pixels[:] = PINK
    yy, xx = np.mgrid[:64, :64]
    pixels[(yy - 14) ** 2 + (xx - 14) ** 2 <= 2**2] = PURPLE  # tiny round
    pixels[(yy - 40) ** 2 + (xx - 40) ** 2 <= 10**2] = PURPLE  # large round
    pixels[50:53, 2:30] = PURPLE  # thin rod
    pixels[4:20, 40:60] = PURPLE  # L shape: a square ...
    pixels[8:20, 44:60] = PINK  # ... with a corner cut out
    caption = captioner(Image.fromarray(pixels))
    assert "pleomorphic nuclei" in caption


def test_greyscale_branch(captioner: MorphologyCaptioner) -> None:
    yy, xx = np.mgrid[:64, :64]
    head = ((yy - 32) / 28) ** 2 + ((xx - 32) / 22) ** 2 < 1  # a centred oval, like a brain slice
    scan = Image.fromarray(np.where(head, 180, 20).astype(np.uint8))
    lopsided = Image.fromarray(np.where(xx < 20, 200, 30).astype(np.uint8))

    caption = captioner(scan)

    assert caption.startswith("greyscale image")
    assert "high contrast" in caption
    assert "left-right symmetric" in caption
    assert _number(caption, r"bright foreground (\d+)%") == pytest.approx(
        100 * math.pi * 28 * 22 / 64**2, abs=2
    )
    assert "asymmetric" in captioner(lopsided)
    # An RGB file with equal channels is greyscale too.
    assert captioner(scan.convert("RGB")).startswith("greyscale image")


def test_non_he_colour_image_uses_intensity_descriptors(captioner: MorphologyCaptioner) -> None:
    skin = Image.new("RGB", (64, 64), (190, 120, 80))  # brown-orange: blue is darkest
    assert captioner(skin).startswith("colour image, not H&E-like")


def test_caption_is_deterministic(captioner: MorphologyCaptioner) -> None:
    tile = _tile(_grid(11), radius=3, seed=7)
    assert captioner(tile) == captioner(tile.copy()) == MorphologyCaptioner().caption(tile)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16"])
def test_tiny_and_odd_images_do_not_crash(captioner: MorphologyCaptioner, mode: str) -> None:
    tile = _tile([(8, 8)], radius=3, size=16)
    image = tile.convert(mode) if mode != "I;16" else tile.convert("L").convert("I;16")
    caption = captioner(image)
    assert isinstance(caption, str) and caption


def test_white_holes_inside_tissue_are_vacuoles(captioner: MorphologyCaptioner) -> None:
    solid = _tile(_grid(16), radius=3)
    pixels = np.asarray(solid).copy()
    pixels[24:40, 24:40] = WHITE  # a 16 x 16 hole: 6% of the tile
    holed = Image.fromarray(pixels)

    assert _number(captioner(solid), r"vacuoles (\d+)%") == 0
    assert _number(captioner(holed), r"vacuoles (\d+)%") == pytest.approx(6, abs=1)


def test_qc_values_from_validate_are_reused_and_agree(tmp_path):
    """Given validate's row, the captioner takes its values; they equal its own measurements."""
    from histoflow.data.quality.features import image_features

    rng = np.random.default_rng(3)
    pixels = np.full((48, 48, 3), 235, np.uint8)
    for _ in range(25):  # purple nuclei on pale pink
        y, x = rng.integers(4, 44, 2)
        pixels[y - 2 : y + 3, x - 2 : x + 3] = (90, 40, 140)
    Image.fromarray(pixels).save(tmp_path / "tile.png")
    image = Image.open(tmp_path / "tile.png")
    row = image_features(tmp_path / "tile.png")
    captioner = MorphologyCaptioner()
    own, reused = captioner.measure(image), captioner.measure(image, qc=row)
    for key in ("tissue_fraction", "brightness", "contrast", "saturation"):
        assert reused[key] == pytest.approx(own[key], abs=1e-6), key
    assert captioner.caption(image, qc=row) == captioner.caption(image)
    # The values do come from the row when it has them.
    assert captioner.measure(image, qc={**row, "brightness": 0.123})["brightness"] == 0.123
