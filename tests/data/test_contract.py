"""The data contract runs a real Great Expectations suite; each rule is tested on its own."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from histoflow.data.contract import ContractResult, check_contract

CLASSES = ["normal", "tumor"]
RULES = dict(allowed_modes=["RGB"], min_size=32, max_size=1024, min_per_class=10)


def _table() -> pd.DataFrame:
    """48 clean images: 12 patients x 4 images, 4 patients per split, labels alternating."""
    rng = np.random.default_rng(0)
    n = 48
    patients = [f"P{i // 4:02d}" for i in range(n)]
    labels = [CLASSES[i % 2] for i in range(n)]
    return pd.DataFrame(
        {
            "path": [f"data/{label}/img_{i:03d}.png" for i, label in enumerate(labels)],
            "label": labels,
            "split": [("train", "val", "test")[(i // 4) % 3] for i in range(n)],
            "patient_id": patients,
            "readable": True,
            "error": "",
            "mode": "RGB",
            "width": 64,
            "height": 64,
            "bytes": rng.integers(2_000, 9_000, n),
            "brightness": rng.random(n),  # an extra column the contract ignores
        }
    )


def _check(table: pd.DataFrame, classes: list[str] = CLASSES, **overrides) -> ContractResult:
    return check_contract(table, classes=classes, **{**RULES, **overrides})


def _paths(table: pd.DataFrame, rows) -> tuple[str, ...]:
    return tuple(table.loc[list(rows), "path"])


def test_clean_table_passes():
    result = _check(_table())
    assert result.success
    assert result.violations == ()
    assert result.statistics["evaluated_expectations"] >= 10
    assert result.statistics["unsuccessful_expectations"] == 0
    assert "passed" in result.summary()


def test_unreadable_file_is_listed():
    table = _table()
    table.loc[3, ["readable", "error", "mode", "width", "height"]] = [
        False,
        "cannot identify image file",
        "",
        np.nan,
        np.nan,
    ]
    result = _check(table)
    assert not result.success
    # Unreadable rows are exempt from the mode and size rules: one violation, not four.
    (violation,) = result.violations
    assert violation.expectation == "expect_column_values_to_be_in_set"
    assert violation.column == "readable"
    assert violation.paths == _paths(table, [3])


def test_zero_byte_file_fails_readable_and_size_rules():
    table = _table()
    table.loc[6, ["readable", "bytes", "mode", "width", "height"]] = [False, 0, "", np.nan, np.nan]
    result = _check(table)
    assert {v.column for v in result.violations} == {"readable", "bytes"}
    assert all(v.paths == _paths(table, [6]) for v in result.violations)


def test_label_outside_classes_is_listed():
    table = _table()
    table.loc[[5, 9], "label"] = "lymphoma"
    (violation,) = _check(table).violations
    assert violation.column == "label"
    assert violation.paths == _paths(table, [5, 9])
    assert "normal" in violation.message


def test_missing_label_is_not_skipped():
    # GX map expectations ignore nulls; the contract must still catch a missing label.
    table = _table()
    table.loc[0, "label"] = None
    (violation,) = _check(table).violations
    assert (violation.column, violation.paths) == ("label", _paths(table, [0]))


def test_wrong_mode_is_listed():
    table = _table()
    table.loc[7, "mode"] = "L"
    table.loc[8, "mode"] = "RGBA"
    (violation,) = _check(table).violations
    assert violation.column == "mode"
    assert violation.paths == _paths(table, [7, 8])
    assert violation.message == "image mode must be one of ['RGB']"


def test_too_small_image_is_listed():
    table = _table()
    table.loc[2, ["width", "height"]] = [16, 16]
    result = _check(table)
    assert {v.column for v in result.violations} == {"width", "height"}
    assert all(v.paths == _paths(table, [2]) for v in result.violations)


def test_unknown_split_is_listed():
    table = _table()
    # The whole patient moves, so the one-split-per-patient rule still holds.
    rows = table.index[table["patient_id"] == "P01"]
    table.loc[rows, "split"] = "holdout"
    (violation,) = _check(table).violations
    assert violation.column == "split"
    assert violation.paths == _paths(table, rows)


def test_patient_in_two_splits_lists_all_their_files():
    table = _table()
    assert table.loc[0, "patient_id"] == "P00" and table.loc[0, "split"] == "train"
    table.loc[0, "split"] = "val"
    (violation,) = _check(table).violations
    assert violation.paths == _paths(table, table.index[table["patient_id"] == "P00"])
    assert "P00" in violation.message
    assert "train/val" in violation.message


def test_class_below_minimum_names_the_class():
    table = _table()
    table.loc[[0, 2, 4], "label"] = "rare"
    (violation,) = _check(table, classes=[*CLASSES, "rare"]).violations
    assert violation.paths == _paths(table, [0, 2, 4])
    assert "'rare' has 3" in violation.message


def test_class_without_images_names_the_class():
    (violation,) = _check(_table(), classes=[*CLASSES, "rare"]).violations
    assert violation.expectation == "expect_column_distinct_values_to_contain_set"
    assert violation.paths == ()
    assert "rare" in violation.message


def test_duplicate_path_lists_both_rows():
    table = _table()
    table.loc[11, "path"] = table.loc[10, "path"]
    (violation,) = _check(table).violations
    assert violation.expectation == "expect_column_values_to_be_unique"
    assert violation.paths == _paths(table, [10, 11])


def test_paths_follow_rows_when_index_is_not_positional():
    table = _table()
    table.loc[7, "mode"] = "L"
    shuffled = table.sample(frac=1.0, random_state=0).set_index(
        pd.Index(range(100, 148), name="row")
    )
    (violation,) = _check(shuffled).violations
    assert violation.paths == (table.loc[7, "path"],)


def test_summary_and_dict_name_the_files():
    table = _table()
    table.loc[7, "mode"] = "L"
    table.loc[[5, 9], "label"] = "lymphoma"
    result = _check(table)
    text = result.summary(max_paths=1)
    assert "FAILED" in text
    assert "img_007.png" in text
    assert "img_005.png" in text
    assert "... and 1 more" in text
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert as_dict["success"] is False
    assert {v["column"] for v in as_dict["violations"]} == {"mode", "label"}


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="patient_id"):
        _check(_table().drop(columns=["patient_id"]))


def test_missing_path_is_reported_by_row():
    table = _table()
    table.loc[4, "path"] = None
    (violation,) = _check(table).violations
    assert violation.expectation == "expect_column_values_to_not_be_null"
    assert violation.paths == ("<row 4>",)
