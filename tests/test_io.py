"""Atomic writes: all or nothing, with ordinary file permissions."""

from __future__ import annotations

import json
import math
import os

import pytest

from histoflow.io import atomic_dir, atomic_path, write_json


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("good")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "good"
    assert list(tmp_path.iterdir()) == [target]  # no temporary left behind


def test_failed_dir_write_keeps_the_old_folder(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "w").write_text("good")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "w").write_text("half")
        raise RuntimeError("crash")
    assert (target / "w").read_text() == "good"
    with atomic_dir(target) as tmp:
        (tmp / "w").write_text("new")
    assert (target / "w").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_written_files_have_ordinary_permissions(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("x")
    with atomic_path(tmp_path / "atomic") as tmp:
        tmp.write_text("x")
    assert os.stat(tmp_path / "atomic").st_mode == os.stat(plain).st_mode


def test_write_json_turns_nan_into_null(tmp_path):
    write_json(tmp_path / "m.json", {"auroc": math.nan, "n": 3})
    assert json.loads((tmp_path / "m.json").read_text()) == {"auroc": None, "n": 3}


def test_write_parquet_reads_back_as_to_parquet_a_slice_at_a_time(tmp_path, monkeypatch):
    import numpy as np
    import pandas as pd
    from pandas.testing import assert_frame_equal

    import histoflow.io as io

    monkeypatch.setattr(io, "_PARQUET_ROWS", 3)  # 7 rows: three slices, one all-None
    frame = pd.DataFrame(
        {
            "path": ["a", "b", "c", "d", "e", "f", "g"],
            "error": [None, None, None, "bad", None, None, None],
            "width": pd.array([1, None, 3, 4, 5, None, 7], dtype="Int64"),
            "blur": [1.0, np.nan, 2, 3, 4, 5, 6],
            "readable": [True, False, True, True, True, False, True],
        },
        index=[6, 5, 4, 3, 2, 1, 0],  # not written, as to_parquet(index=False)
    )
    for rows in (frame, frame.iloc[:0]):
        rows.to_parquet(tmp_path / "pandas.parquet", index=False)
        io.write_parquet(rows, tmp_path / "sliced.parquet")
        assert_frame_equal(
            pd.read_parquet(tmp_path / "sliced.parquet"),
            pd.read_parquet(tmp_path / "pandas.parquet"),
        )
    # A frame Arrow cannot store fails before the old file is touched.
    io.write_parquet(frame, tmp_path / "sliced.parquet")
    with pytest.raises(Exception, match="object"):
        io.write_parquet(frame.assign(bad=[object()] * 7), tmp_path / "sliced.parquet")
    assert_frame_equal(pd.read_parquet(tmp_path / "sliced.parquet"), frame.reset_index(drop=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pandas.parquet", "sliced.parquet"]
