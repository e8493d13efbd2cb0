"""Drift reports run real Evidently on small feature tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import FEATURE_STATS as FEATURES
from histoflow.monitoring import drift_report

SHIFTED = ["brightness", "mean_r", "od_hematoxylin"]


def _features(n: int, seed: int, shift: tuple[str, ...] = ()) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({name: rng.normal(mean, std, n) for name, (mean, std) in FEATURES.items()})
    for name in shift:
        table[name] += 4 * FEATURES[name][1]
    table["path"] = [f"img_{i:03d}.png" for i in range(n)]  # not a feature: ignored
    return table


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return _features(200, seed=0)


@pytest.fixture(scope="module")
def shifted(reference, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("shifted")
    current = _features(100, seed=1, shift=tuple(SHIFTED))
    summary = drift_report(
        reference,
        current,
        columns=list(FEATURES),
        out_dir=out_dir,
        drift_share=0.25,
        extra={"batch": "inbox/2024-06"},
    )
    return summary, out_dir


def test_same_distribution_has_no_drift(reference, tmp_path):
    summary = drift_report(
        reference, _features(100, seed=2), columns=list(FEATURES), out_dir=tmp_path
    )
    assert summary["drift_detected"] is False
    assert summary["drift_share"] < 0.5
    assert (summary["n_reference"], summary["n_current"]) == (200, 100)


def test_shifted_features_drift(shifted):
    summary, _ = shifted
    assert summary["drift_detected"] is True
    assert summary["threshold_share"] == 0.25
    drifted = {name for name, col in summary["columns"].items() if col["drifted"]}
    assert set(SHIFTED) <= drifted
    assert summary["drift_share"] == pytest.approx(len(drifted) / len(FEATURES))
    for name in SHIFTED:
        assert summary["columns"][name]["score"] < 0.05  # KS p-value
        assert summary["columns"][name]["method"] == "ks"


def test_files_are_written(shifted):
    summary, out_dir = shifted
    html = (out_dir / "drift.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html")
    assert html.rstrip().endswith("</html>")
    assert len(html) > 100_000  # the self-contained Evidently viewer, not an empty shell
    assert json.loads((out_dir / "drift.json").read_text()) == summary
    assert summary["batch"] == "inbox/2024-06"
    assert sorted(p.name for p in out_dir.iterdir()) == ["drift.html", "drift.json"]


def test_all_nan_column_is_dropped(reference, tmp_path):
    current = _features(100, seed=3)
    current["blur"] = np.nan
    summary = drift_report(reference, current, columns=list(FEATURES), out_dir=tmp_path)
    assert summary["dropped_columns"] == ["blur"]
    assert "blur" not in summary["columns"]
    assert len(summary["columns"]) == len(FEATURES) - 1


def test_empty_current_is_rejected(reference, tmp_path):
    with pytest.raises(ValueError, match="current table is empty"):
        drift_report(reference, reference.iloc[:0], columns=list(FEATURES), out_dir=tmp_path)
    assert not (tmp_path / "drift.json").exists()


def test_missing_column_is_named(reference, tmp_path):
    current = _features(100, seed=4).drop(columns=["od_eosin"])
    with pytest.raises(ValueError, match="od_eosin"):
        drift_report(reference, current, columns=list(FEATURES), out_dir=tmp_path)
