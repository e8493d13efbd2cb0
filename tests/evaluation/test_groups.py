"""Per-group metrics and the cross-group protocol's checks of its params."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from histoflow.config import CrossGroupConfig
from histoflow.evaluation.groups import cross_group_home, cross_group_scores, group_breakdowns


def test_group_breakdowns_score_each_group_on_its_own_rows():
    table = pd.DataFrame({"site": ["a", "a", "b", "b"], "other": [1, 2, 3, 4]})
    y = np.array([0, 1, 0, 1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])  # site b: 1 of 2 right
    out = group_breakdowns(table, y, probs, ["site", "missing"])
    assert set(out) == {"site"}
    assert out["site"]["a"] == pytest.approx(
        {
            "n": 2,
            "accuracy": 1,
            "balanced_accuracy": 1,
            "macro_recall": 1,
            "macro_f1": 1,
            "auroc": 1,
            "ece": (0.1 + 0.2) / 2,
        }
    )
    assert out["site"]["b"]["accuracy"] == 0.5 and out["site"]["b"]["macro_recall"] == 0.5


def test_cross_group_names_the_values_when_train_on_is_not_one():
    index = pd.DataFrame({"split": ["train", "test"], "magnification": ["20x", "40x"]})
    with pytest.raises(ValueError, match=r"train_on = '100x'.*values there: 20x, 40x"):
        cross_group_home(CrossGroupConfig(column="magnification", train_on="100x"), index)


def test_cross_group_is_skipped_with_a_reason_when_the_column_is_absent():
    index = pd.DataFrame({"split": ["train", "test"]})
    out = cross_group_home(CrossGroupConfig(column="modality", train_on="MR"), index)
    assert out == "the manifest has no column 'modality'"


def test_cross_group_home_marks_the_rows_of_the_trained_group():
    index = pd.DataFrame({"magnification": ["40x", "20x", "40x", None]})
    home = cross_group_home(CrossGroupConfig(column="magnification", train_on="40x"), index)
    assert home.tolist() == [True, False, True, False]


def test_cross_group_scores_each_group_and_marks_the_home_one():
    values = pd.Series(["40x", "40x", "20x", "20x"])
    y = np.array([0, 1, 0, 1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])  # 20x: 1 of 2 right
    out = cross_group_scores(values, y, probs, "40x", resamples=20, seed=0)
    assert set(out) == {"20x", "40x"}
    assert out["40x"]["in_domain"] and not out["20x"]["in_domain"]
    assert out["40x"]["n"] == 2 and out["40x"]["accuracy"] == 1
    assert out["20x"]["accuracy"] == 0.5
    low, high = out["20x"]["ci"]["macro_recall"]
    assert 0 <= low <= high <= 1
