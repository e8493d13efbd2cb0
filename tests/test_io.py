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
