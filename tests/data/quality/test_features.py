"""Tests for histoflow.data.quality.features: one file's QC row, readable or not, its bit depth
and its perceptual hash."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from scipy.fft import dctn

from histoflow.data.quality.features import DRIFT_FEATURES, QC_COLUMNS, image_features
from histoflow.data.quality.hashing import phash_distance

PINK = (235, 160, 200)
PURPLE = (70, 40, 120)


def _he_tile(size: int = 64, seed: int = 0) -> Image.Image:
    """Pink stroma with purple nuclei on a jittered grid."""
    rng = np.random.default_rng(seed)
    pixels = np.empty((size, size, 3), dtype=np.float64)
    pixels[:] = PINK
    yy, xx = np.mgrid[:size, :size]
    for cy in range(4, size, 9):
        for cx in range(4, size, 9):
            cy_, cx_ = cy + rng.uniform(-1, 1), cx + rng.uniform(-1, 1)
            pixels[(yy - cy_) ** 2 + (xx - cx_) ** 2 <= 2.5**2] = PURPLE
    pixels += rng.normal(0, 4, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


def test_readable_rgb_tile(tmp_path: Path) -> None:
    path = _save(_he_tile(), tmp_path / "tile.png")

    row = image_features(path)

    assert tuple(row) == QC_COLUMNS
    assert row["readable"] is True
    assert row["error"] == ""
    assert (row["format"], row["mode"], row["width"], row["height"]) == ("PNG", "RGB", 64, 64)
    assert row["bit_depth"] == 8
    assert len(row["phash"]) == 16 and int(row["phash"], 16) >= 0
    assert row["bytes"] == path.stat().st_size
    assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert 0.3 < row["brightness"] < 0.9
    assert 0 < row["contrast"] < 0.5
    assert row["blur"] > 0
    assert row["tissue_fraction"] > 0.95
    # pink and purple: red and blue above green
    assert row["mean_r"] > row["mean_g"] and row["mean_b"] > row["mean_g"]
    assert row["od_hematoxylin"] > 0 and row["od_eosin"] > 0
    assert 0 < row["saturation"] < 1


@pytest.mark.parametrize("kind", ["empty", "truncated", "text"])
def test_unreadable_files_are_reported_not_raised(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.png"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        full = _save(_he_tile(), tmp_path / "full.png").read_bytes()
        path.write_bytes(full[: len(full) // 2])
    else:
        path.write_text("this is not an image\n")

    row = image_features(path)

    assert row["readable"] is False
    assert row["error"]
    assert "BytesIO" not in row["error"]
    assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert row["phash"] == ""
    assert all(math.isnan(row[name]) for name in DRIFT_FEATURES)


def test_missing_file_has_no_hash(tmp_path: Path) -> None:
    row = image_features(tmp_path / "missing.png")
    assert row["readable"] is False
    assert row["error"]
    assert row["sha256"] == ""
    assert row["phash"] == ""
    assert math.isnan(row["bit_depth"])


def test_greyscale_image_has_no_stain_density(tmp_path: Path) -> None:
    grey = _he_tile().convert("L")
    row = image_features(_save(grey, tmp_path / "grey.png"))

    assert row["readable"] is True
    assert row["mode"] == "L"
    assert math.isnan(row["od_hematoxylin"]) and math.isnan(row["od_eosin"])
    assert row["saturation"] == 0
    assert row["mean_r"] == pytest.approx(row["mean_g"]) == pytest.approx(row["mean_b"])


def test_tissue_fraction_separates_blank_from_tissue(tmp_path: Path) -> None:
    white = Image.new("RGB", (64, 64), (245, 245, 245))
    blank = image_features(_save(white, tmp_path / "blank.png"))
    tissue = image_features(_save(_he_tile(), tmp_path / "tissue.png"))

    assert blank["tissue_fraction"] < 0.05
    assert math.isnan(blank["od_hematoxylin"])  # no tissue pixels to average over
    assert tissue["tissue_fraction"] > 0.95


def test_blur_is_lower_for_a_blurred_image(tmp_path: Path) -> None:
    sharp = _he_tile()
    blurred = sharp.filter(ImageFilter.GaussianBlur(2))

    sharp_row = image_features(_save(sharp, tmp_path / "sharp.png"))
    blurred_row = image_features(_save(blurred, tmp_path / "blurred.png"))

    assert blurred_row["blur"] < 0.5 * sharp_row["blur"]


# --- bit depth and perceptual hash ---------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "bits"),
    [
        (Image.new("1", (16, 16), 1), 1),
        (Image.new("L", (16, 16), 128), 8),
        (Image.new("RGB", (16, 16), PINK), 8),
        (Image.fromarray(np.full((16, 16), 40_000, dtype=np.uint16)), 16),  # mode I;16
    ],
    ids=["1", "L", "RGB", "I;16"],
)
def test_bit_depth_of_stored_mode(tmp_path: Path, image: Image.Image, bits: int) -> None:
    path = _save(image, tmp_path / "image.png")

    row = image_features(path)

    assert row["readable"] is True
    assert row["mode"] == image.mode
    assert row["bit_depth"] == bits


def _smooth_image(seed: int, size: int = 64) -> Image.Image:
    """Random low-frequency colour pattern: 8x8 noise blown up to ``size`` px."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return coarse.resize((size, size), Image.Resampling.BICUBIC)


def test_phash_is_the_dct_hash_of_the_spec(tmp_path: Path) -> None:
    # Luminance box-averaged to 32x32, 2-D DCT, top-left 8x8, bits = above the AC median.
    image = _he_tile(seed=5)
    lum = np.asarray(image, dtype=np.float32) / 255 @ np.float32([0.299, 0.587, 0.114])
    small = Image.fromarray(lum).resize((32, 32), Image.Resampling.BOX)
    block = dctn(np.asarray(small, dtype=np.float64), norm="ortho")[:8, :8].ravel()
    expected = np.packbits(block > np.median(block[1:])).tobytes().hex()

    assert image_features(_save(image, tmp_path / "tile.png"))["phash"] == expected


def test_phash_is_near_for_a_re_encoded_tile_and_far_for_another(tmp_path: Path) -> None:
    tile = _he_tile(seed=1)
    png = image_features(_save(tile, tmp_path / "tile.png"))
    tile.save(tmp_path / "tile.jpg", quality=95)
    jpeg = image_features(tmp_path / "tile.jpg")
    other = image_features(_save(_smooth_image(seed=2), tmp_path / "other.png"))
    another = image_features(_save(_smooth_image(seed=3), tmp_path / "another.png"))

    assert png["sha256"] != jpeg["sha256"]
    assert phash_distance(png["phash"], png["phash"]) == 0
    assert phash_distance(png["phash"], jpeg["phash"]) <= 4
    assert phash_distance(png["phash"], other["phash"]) > 10
    assert phash_distance(other["phash"], another["phash"]) > 10
