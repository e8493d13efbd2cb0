"""Tests for histoflow.data.qc: per-image features, unreadable files and the feature table."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from histoflow.data.qc import DRIFT_FEATURES, QC_COLUMNS, feature_table, image_features

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
    assert all(math.isnan(row[name]) for name in DRIFT_FEATURES)


def test_missing_file_has_no_hash(tmp_path: Path) -> None:
    row = image_features(tmp_path / "missing.png")
    assert row["readable"] is False
    assert row["error"]
    assert row["sha256"] == ""


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


def test_feature_table_has_one_row_per_path_in_column_order(tmp_path: Path) -> None:
    paths = [_save(_he_tile(seed=i), tmp_path / f"tile_{i}.png") for i in range(3)]
    _save(_he_tile(seed=3), tmp_path / "tile_3.jpg")
    paths.append(tmp_path / "tile_3.jpg")
    (tmp_path / "broken.png").write_bytes(b"")
    paths.append(tmp_path / "broken.png")

    table = feature_table(iter(paths), progress=False)

    assert list(table.columns) == ["path", *QC_COLUMNS]
    assert table["path"].tolist() == [str(p) for p in paths]
    assert table["readable"].tolist() == [True, True, True, True, False]
    assert table["format"].tolist() == ["PNG", "PNG", "PNG", "JPEG", ""]
    assert str(table["width"].dtype) == "Int64"
    assert all(table[name].dtype == np.float64 for name in DRIFT_FEATURES)
