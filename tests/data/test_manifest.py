"""Reading the validated manifest: whole, with Arrow strings, or a batch of rows at a time."""

from __future__ import annotations

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from histoflow.data.manifest import manifest_batches, read_manifest


def _manifest(tmp_path):
    table = pd.DataFrame(
        {
            "path": [f"c{i % 3}/t{i}.png" for i in range(10)],
            "label": [f"c{i % 3}" for i in range(10)],
            "sha256": [f"{i:064x}" for i in range(10)],
            "blur": [float(i) for i in range(10)],
        }
    )
    path = tmp_path / "manifest.parquet"
    table.to_parquet(path, index=False)
    return table, path


def test_batches_are_the_table_in_order_with_only_the_columns_asked(tmp_path):
    table, path = _manifest(tmp_path)
    batches = list(manifest_batches(path, ("sha256", "path", "not_a_column"), 4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert_frame_equal(pd.concat(batches, ignore_index=True), table[["path", "sha256"]])


def test_arrow_strings_hold_the_same_values(tmp_path):
    table, path = _manifest(tmp_path)
    read = read_manifest(path, ("path", "label"), arrow_strings=True)
    assert all(isinstance(dtype, pd.ArrowDtype) for dtype in read.dtypes)
    assert read["path"].tolist() == table["path"].tolist()
    assert_frame_equal(read_manifest(path, ("path", "label")), table[["path", "label"]])


def test_a_missing_manifest_says_which_stage_writes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="histoflow stage validate"):
        next(manifest_batches(tmp_path / "manifest.parquet", ("path",), 4))
    with pytest.raises(FileNotFoundError, match="histoflow stage validate"):
        read_manifest(tmp_path / "manifest.parquet")
