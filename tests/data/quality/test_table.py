"""Tests for histoflow.data.quality.table: the feature table, its worker processes and its
cache."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histoflow.data.quality import table as qc_table
from histoflow.data.quality.features import DRIFT_FEATURES, QC_COLUMNS
from histoflow.data.quality.table import feature_table

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
    assert str(table["bit_depth"].dtype) == "Int64"
    assert table["phash"].iloc[-1] == ""
    assert all(table[name].dtype == np.float64 for name in DRIFT_FEATURES)


# --- feature_table: workers and cache ------------------------------------------------------


@pytest.fixture
def tiles(tmp_path: Path) -> list[Path]:
    """Four tiles (one greyscale), a broken file and a missing one."""
    folder = tmp_path / "tiles"
    folder.mkdir()
    paths = [_save(_he_tile(seed=i), folder / f"tile_{i}.png") for i in range(3)]
    paths.append(_save(_he_tile(seed=3).convert("L"), folder / "grey.png"))
    (folder / "broken.png").write_bytes(b"not a png")
    return [*paths, folder / "broken.png", folder / "missing.png"]


def test_feature_table_with_workers_equals_in_process(tiles: list[Path]) -> None:
    in_process = feature_table(tiles, progress=False)
    with_workers = feature_table(iter(tiles), workers=2, progress=False)

    pd.testing.assert_frame_equal(with_workers, in_process)


def test_rows_turned_into_columns_in_chunks_give_the_same_table(
    tiles: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows become columns a chunk at a time (memory); chunks of one kind (a lone unreadable
    row, a lone greyscale one) must still give the dtypes of the table built at once."""
    whole = feature_table(tiles, progress=False)
    monkeypatch.setattr(qc_table, "_TABLE_CHUNK", 1)
    pd.testing.assert_frame_equal(feature_table(tiles, progress=False), whole)
    monkeypatch.setattr(qc_table, "_TABLE_CHUNK", 4)
    pd.testing.assert_frame_equal(feature_table(tiles, progress=False), whole)


def test_feature_table_rejects_negative_workers(tiles: list[Path]) -> None:
    with pytest.raises(ValueError, match="workers must be 0"):
        feature_table(tiles, workers=-1, progress=False)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts in-process decodes (workers=0): one list entry per file decoded."""
    calls: list[int] = []
    decode = qc_table.features_from_bytes

    def counting(data: bytes, sha256: str, **kwargs) -> dict:
        calls.append(len(data))
        return decode(data, sha256, **kwargs)

    monkeypatch.setattr(qc_table, "features_from_bytes", counting)
    return calls


def test_cache_reuses_rows_and_gives_the_same_table(
    tiles: list[Path], tmp_path: Path, decodes: list[int]
) -> None:
    cache = tmp_path / "qc.parquet"
    uncached = feature_table(tiles, progress=False)
    decodes.clear()

    first = feature_table(tiles, cache=cache, progress=False)
    assert len(decodes) == 5  # every file that could be opened
    second = feature_table(tiles, cache=cache, progress=False)
    assert len(decodes) == 5  # nothing decoded again

    pd.testing.assert_frame_equal(first, uncached)
    pd.testing.assert_frame_equal(second, uncached)
    stored = pd.read_parquet(cache)
    assert stored["path"].tolist() == [str(p) for p in tiles]
    assert "mtime_ns" in stored.columns and "mtime_ns" not in second.columns


def test_cache_detects_a_change_with_the_same_size_and_mtime(
    tmp_path: Path, decodes: list[int]
) -> None:
    # BMP is uncompressed: two different 64 px tiles are files of exactly the same size.
    path = _save(_he_tile(seed=0), tmp_path / "tile.bmp")
    cache = tmp_path / "qc.parquet"
    before = feature_table([path], cache=cache, progress=False)
    stat = path.stat()
    _save(_he_tile(seed=1).transpose(Image.Transpose.ROTATE_90), path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    decodes.clear()

    after = feature_table([path], cache=cache, progress=False)

    assert len(decodes) == 1
    assert after["sha256"][0] != before["sha256"][0]
    pd.testing.assert_frame_equal(after, feature_table([path], progress=False))


def test_cache_rows_follow_a_changed_pixel_limit(
    tiles: list[Path], tmp_path: Path, decodes: list[int]
) -> None:
    cache = tmp_path / "qc.parquet"
    feature_table(tiles, cache=cache, progress=False)
    small = feature_table(tiles, cache=cache, progress=False, max_pixels=64 * 64 - 1)
    assert not small["readable"].any()  # cached readable rows are judged by the new limit
    assert small["error"][0].startswith("image is 64 x 64 = 4,096 pixels, more than")
    decodes.clear()
    again = feature_table(tiles, cache=cache, progress=False)
    assert len(decodes) == 4 and again["readable"].sum() == 4  # refused ones measured again


def test_cache_keeps_only_this_runs_paths(tiles: list[Path], tmp_path: Path) -> None:
    cache = tmp_path / "qc.parquet"
    feature_table(tiles, cache=cache, progress=False)

    feature_table(tiles[:2], cache=cache, progress=False)

    assert pd.read_parquet(cache)["path"].tolist() == [str(p) for p in tiles[:2]]


@pytest.mark.parametrize("kind", ["garbage", "old_columns"])
def test_unusable_cache_is_ignored_with_a_warning(
    tiles: list[Path], tmp_path: Path, decodes: list[int], kind: str
) -> None:
    cache = tmp_path / "qc.parquet"
    if kind == "garbage":
        cache.write_bytes(b"PAR1 this is not parquet")
    else:
        pd.DataFrame({"path": [str(tiles[0])], "sha256": ["x"]}).to_parquet(cache)
    expected = feature_table(tiles, progress=False)
    decodes.clear()

    with pytest.warns(UserWarning, match="ignoring the QC cache"):
        table = feature_table(tiles, cache=cache, progress=False)

    pd.testing.assert_frame_equal(table, expected)
    assert len(decodes) == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten cache is valid
        feature_table(tiles, cache=cache, progress=False)
    assert len(decodes) == 5
