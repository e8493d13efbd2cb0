"""The data contract runs a real Great Expectations suite; each check is tested on its own."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from histoflow.config import ValidateConfig
from histoflow.data.quality.contract import CHECKS, ContractResult, check_contract

CLASSES = ["normal", "tumor"]
CFG = ValidateConfig(min_size=32, max_size=1024, min_per_class=10)
ERRORS = {
    "unreadable",
    "outside_root",
    "unlisted_files",
    "empty_split",
    "class_missing_from_split",
    "unknown_label",
    "class_min_count",
    "patient_leak",
    "duplicate_across_splits",
    "mode",
    "size",
}
WARNINGS = set(CHECKS) - ERRORS


def _table() -> pd.DataFrame:
    """48 clean images: 12 patients x 4 images, 4 patients per split, labels alternating."""
    rng = np.random.default_rng(0)
    n = 48
    labels = [CLASSES[i % 2] for i in range(n)]
    return pd.DataFrame(
        {
            "path": [f"{label}/img_{i:03d}.png" for i, label in enumerate(labels)],
            "label": labels,
            "split": [("train", "val", "test")[(i // 4) % 3] for i in range(n)],
            "patient_id": [f"P{i // 4:02d}" for i in range(n)],
            "readable": True,
            "error": "",
            "format": "PNG",
            "mode": "RGB",
            "bit_depth": 8,
            "width": 64,
            "height": 64,
            "bytes": rng.integers(2_000, 9_000, n),
            "sha256": [hashlib.sha256(f"image {i}".encode()).hexdigest() for i in range(n)],
            # Random 64-bit hashes lie ~32 bits apart, far beyond near_duplicate_distance.
            "phash": [f"{h:016x}" for h in rng.integers(0, 2**63, n)],
            "brightness": rng.uniform(0.5, 0.8, n),
            "contrast": rng.uniform(0.1, 0.2, n),
            "blur": rng.uniform(50, 500, n),
            "tissue_fraction": rng.uniform(0.4, 0.9, n),
            "site": "A",
        }
    )


def _check(
    table: pd.DataFrame, cfg: ValidateConfig = CFG, classes: list[str] = CLASSES, **kwargs
) -> ContractResult:
    return check_contract(table, cfg, classes=classes, **kwargs)


def _with_levels(cfg: ValidateConfig = CFG, **levels: str) -> ValidateConfig:
    return cfg.model_copy(update={"checks": cfg.checks.model_copy(update=levels)})


def _paths(table: pd.DataFrame, rows) -> set[str]:
    return set(table.loc[list(rows), "path"])


def _fired(result: ContractResult) -> dict[str, tuple[set[str], set[str]]]:
    """check -> (levels, offending paths), over all of that check's violations."""
    fired: dict[str, tuple[set[str], set[str]]] = {}
    for v in result.violations:
        levels, paths = fired.setdefault(v.check, (set(), set()))
        levels.add(v.level)
        paths.update(v.paths)
    return fired


# Each defect breaks exactly one check. It edits the table in place and returns the offending
# rows plus what the test needs besides: other classes or thresholds, and text the message
# must contain.
def _unreadable(t: pd.DataFrame) -> dict:
    t.loc[3, ["readable", "error", "mode", "phash"]] = [False, "cannot identify image", "", ""]
    t.loc[3, ["width", "height", "blur", "tissue_fraction"]] = np.nan
    t.loc[6, ["readable", "bytes", "mode", "phash"]] = [False, 0, "", ""]
    t.loc[6, "sha256"] = hashlib.sha256(b"").hexdigest()
    return {"rows": [3, 6], "text": "cannot identify image"}


def _outside_root(t: pd.DataFrame) -> dict:
    t.loc[5, "path"] = "../elsewhere/img_005.png"
    t.loc[8, "path"] = "/mnt/scans/img_008.png"
    t.loc[9, "path"] = "tumor/../tumor/img_009_again.png"  # stays inside: not flagged
    return {"rows": [5, 8], "text": "inside the data folder"}


def _unlisted_files(t: pd.DataFrame) -> dict:
    unlisted = ["tumor/new_001.png", "lymphoma/new_002.png"]
    return {"rows": [], "paths": unlisted, "kwargs": {"unlisted": unlisted}, "text": "2 images"}


def _empty_split(t: pd.DataFrame) -> dict:
    t.loc[t["split"] == "test", "split"] = "val"  # whole patients move: no leak
    origin = {"train": "data", "val": "data", "test": "none"}
    return {"rows": [], "kwargs": {"split_origin": origin}, "text": "no images in test"}


def _class_missing_from_split(t: pd.DataFrame) -> dict:
    t.loc[(t["split"] == "val") & (t["label"] == "tumor"), "label"] = "normal"
    return {"rows": [], "cfg": {"max_class_ratio": 3.0}, "text": "none for ['tumor']"}


def _unknown_label(t: pd.DataFrame) -> dict:
    t.loc[[5, 9], "label"] = "lymphoma"
    return {"rows": [5, 9], "text": "'lymphoma' (2)"}


def _class_min_count(t: pd.DataFrame) -> dict:
    t.loc[[0, 2, 4, 6, 8], "label"] = "rare"
    return {"rows": [0, 2, 4, 6, 8], "classes": [*CLASSES, "rare"], "text": "'rare' has 5"}


def _class_missing(t: pd.DataFrame) -> dict:
    return {"rows": [], "classes": [*CLASSES, "rare"], "text": "no images for ['rare']"}


def _patient_leak(t: pd.DataFrame) -> dict:
    assert (t.loc[0, "patient_id"], t.loc[0, "split"]) == ("P00", "train")
    t.loc[0, "split"] = "val"
    return {"rows": t.index[t["patient_id"] == "P00"], "text": "P00 (train/val)"}


def _inferred_case_leak(t: pd.DataFrame) -> dict:
    # Cases validate inferred (no patient ids): tile 4 (val) joins the case of tiles 0-3 (train).
    t["case_id"] = [f"C{i // 4:04d}" for i in range(len(t))]
    t.loc[4, "case_id"] = "C0000"
    return {"rows": [0, 1, 2, 3, 4], "text": "C0000 (train/val, 5 images)"}


def _duplicate_across_splits(t: pd.DataFrame) -> dict:
    assert t.loc[0, "split"] != t.loc[20, "split"] and t.loc[0, "label"] == t.loc[20, "label"]
    t.loc[20, ["sha256", "phash"]] = t.loc[0, ["sha256", "phash"]]
    return {"rows": [0, 20], "text": "normal/img_000.png (train) = normal/img_020.png (test)"}


def _mode(t: pd.DataFrame) -> dict:
    t.loc[7, "mode"] = "L"
    t.loc[8, "mode"] = "RGBA"
    return {"rows": [7, 8], "text": "'L' (1), 'RGBA' (1)"}


def _size(t: pd.DataFrame) -> dict:
    t.loc[2, "width"] = 16
    t.loc[10, "height"] = 2000
    return {"rows": [2, 10], "text": "between 32 and 1024 px"}


def _near_duplicate(t: pd.DataFrame) -> dict:
    assert t.loc[1, "split"] != t.loc[21, "split"]
    # Three bits flipped: within the default distance of 4, bytes still differ.
    t.loc[21, "phash"] = f"{int(t.loc[1, 'phash'], 16) ^ 0b1011:016x}"
    return {"rows": [1, 21], "text": "1 pair: tumor/img_001.png (train) ~ tumor/img_021.png"}


def _blurred(t: pd.DataFrame) -> dict:
    t.loc[11, "blur"] = 1.0
    return {"rows": [11], "text": "at least 5.0"}


def _blank(t: pd.DataFrame) -> dict:
    t.loc[13, "tissue_fraction"] = 0.002
    return {"rows": [13], "text": "tissue_fraction at least 0.01"}


def _class_imbalance(t: pd.DataFrame) -> dict:
    t.loc[[1, 3, 5, 7], "label"] = "normal"
    return {"rows": [], "cfg": {"max_class_ratio": 1.2}, "text": "is 1.4 ('normal' 28, 'tumor' 20)"}


def _conflicting_labels(t: pd.DataFrame) -> dict:
    assert t.loc[0, "split"] == t.loc[1, "split"] and t.loc[0, "label"] != t.loc[1, "label"]
    t.loc[1, ["sha256", "phash"]] = t.loc[0, ["sha256", "phash"]]
    return {"rows": [0, 1], "text": "normal/img_000.png (normal) = tumor/img_001.png (tumor)"}


DEFECTS: dict[str, tuple[str, Callable[[pd.DataFrame], dict]]] = {
    "unreadable": ("unreadable", _unreadable),
    "outside_root": ("outside_root", _outside_root),
    "unlisted_files": ("unlisted_files", _unlisted_files),
    "empty_split": ("empty_split", _empty_split),
    "class_missing_from_split": ("class_missing_from_split", _class_missing_from_split),
    "unknown_label": ("unknown_label", _unknown_label),
    "class_min_count": ("class_min_count", _class_min_count),
    "class_missing": ("class_min_count", _class_missing),
    "patient_leak": ("patient_leak", _patient_leak),
    "inferred_case_leak": ("inferred_case_leak", _inferred_case_leak),
    "duplicate_across_splits": ("duplicate_across_splits", _duplicate_across_splits),
    "mode": ("mode", _mode),
    "size": ("size", _size),
    "near_duplicate_across_splits": ("near_duplicate_across_splits", _near_duplicate),
    "blurred": ("blurred", _blurred),
    "blank": ("blank", _blank),
    "class_imbalance": ("class_imbalance", _class_imbalance),
    "conflicting_labels": ("conflicting_labels", _conflicting_labels),
}


def _defect(name: str) -> tuple[str, pd.DataFrame, dict, ValidateConfig]:
    check, apply = DEFECTS[name]
    table = _table()
    spec = apply(table)
    return check, table, spec, CFG.model_copy(update=spec.get("cfg", {}))


def test_every_check_has_a_defect():
    assert {check for check, _ in DEFECTS.values()} == set(CHECKS)


def test_clean_table_passes():
    result = _check(_table())
    assert result.success
    assert result.violations == ()
    # Every check on (class_missing_from_split once per split), plus three schema expectations.
    assert result.statistics["evaluated_expectations"] == len(result.expectations) == 25
    assert result.statistics["unsuccessful_expectations"] == 0
    assert result.summary() == "Data contract passed (25 expectations)."


@pytest.mark.parametrize("name", list(DEFECTS))
def test_each_defect_fires_its_check_only(name):
    check, table, spec, cfg = _defect(name)
    result = _check(table, cfg, spec.get("classes", CLASSES), **spec.get("kwargs", {}))
    level = "error" if check in ERRORS else "warning"
    paths = _paths(table, spec["rows"]) | set(spec.get("paths", []))
    assert _fired(result) == {check: ({level}, paths)}
    assert result.success is (level == "warning")
    assert any(spec["text"] in v.message for v in result.violations), result.summary()


def test_level_off_silences_checks():
    table = _table()
    off = ["unreadable", "patient_leak", "near_duplicate_across_splits", "class_imbalance"]
    specs = [DEFECTS[name][1](table) for name in off]
    cfg = _with_levels(CFG.model_copy(update=specs[-1]["cfg"]), **dict.fromkeys(off, "off"))
    result = _check(table, cfg)
    assert result.violations == ()
    assert not set(off) & {e["check"] for e in result.expectations}


def test_level_error_escalates_warnings():
    table = _table()
    _blurred(table)
    _conflicting_labels(table)
    result = _check(table, _with_levels(blurred="error", conflicting_labels="error"))
    assert not result.success
    assert {v.check for v in result.errors} == {"blurred", "conflicting_labels"}
    assert result.warnings == ()


def test_flagged_returns_blurred_and_blank_paths():
    table = _table()
    _blurred(table)
    _blank(table)
    _mode(table)
    result = _check(table)
    assert result.flagged(["blurred", "blank"]) == _paths(table, [11, 13])
    assert result.flagged(["mode"]) == _paths(table, [7, 8])
    with pytest.raises(ValueError, match="blury"):
        result.flagged(["blury"])


def test_summary_lists_errors_before_warnings_and_dict_is_json():
    table = _table()
    _blurred(table)
    _unknown_label(table)
    result = _check(table)
    text = result.summary(max_paths=1)
    assert text.startswith("Data contract FAILED: 1 error, 1 warning (25 expectations).")
    assert text.index("ERROR [unknown_label]") < text.index("WARNING [blurred]")
    assert "tumor/img_005.png" in text
    assert "... and 1 more" in text

    as_dict = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert (as_dict["success"], as_dict["n_errors"], as_dict["n_warnings"]) == (False, 1, 1)
    assert {v["check"]: v["level"] for v in as_dict["violations"]} == {
        "unknown_label": "error",
        "blurred": "warning",
    }
    by_check = {e["check"]: e for e in as_dict["expectations"]}
    assert by_check["blurred"]["result"]["unexpected_count"] == 1
    assert by_check["class_imbalance"]["result"]["observed_value"] == pytest.approx(24 / 22)


def test_warnings_alone_pass():
    table = _table()
    _blank(table)
    result = _check(table)
    assert result.success
    assert result.summary().startswith("Data contract passed with 0 errors, 1 warning")


def test_paths_follow_rows_when_index_is_not_positional():
    table = _table()
    _mode(table)
    shuffled = table.sample(frac=1.0, random_state=0).set_index(pd.Index(range(100, 148)))
    (violation,) = _check(shuffled).violations
    assert set(violation.paths) == _paths(table, [7, 8])


def test_schema_rules_always_run_as_errors():
    table = _table()
    table.loc[11, "path"] = table.loc[10, "path"]
    all_off = _with_levels(**dict.fromkeys(CHECKS, "off"))
    (violation,) = _check(table, all_off).violations
    assert (violation.check, violation.level) == ("schema", "error")
    assert violation.expectation == "expect_column_values_to_be_unique"


def test_missing_column_names_the_check_that_needs_it():
    table = _table().drop(columns=["phash"])
    with pytest.raises(ValueError, match=r"'phash' \(for near_duplicate_across_splits\)"):
        _check(table)
    result = _check(table, _with_levels(near_duplicate_across_splits="off"))
    assert result.success


def test_empty_table_is_refused():
    with pytest.raises(ValueError, match="no images"):
        _check(_table().iloc[:0])


def test_the_rules_run_on_the_columns_they_read_only():
    # A copy of every QC column for GX cost ~0.3 KB per tile; messages still name the files.
    from histoflow.data.quality.contract.columns import derive_columns

    table = _table()
    levels = {name: "error" for name in CFG.checks.model_dump()}
    frame, _ = derive_columns(table, CFG, CLASSES, levels)
    assert {"brightness", "contrast", "site", "format", "bit_depth"}.isdisjoint(frame.columns)
    assert {"path", "label", "split", "patient_id", "sha256", "phash", "error"} <= set(frame)
    table.loc[3, ["readable", "error"]] = [False, "cannot identify image file"]
    result = check_contract(table, CFG, classes=CLASSES)
    [unreadable] = [v for v in result.errors if v.check == "unreadable"]
    assert unreadable.paths == (table.loc[3, "path"],)
    assert "cannot identify image file" in unreadable.message
