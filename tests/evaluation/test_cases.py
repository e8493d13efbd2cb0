"""Patient-level aggregation against a hand-computed example."""

import numpy as np
import pandas as pd
import pytest

from histoflow.evaluation.cases import aggregate_cases, case_metrics

CLASSES = ["a", "b"]
# patient, true label, P(a) of each tile (P(b) = 1 - P(a))
TILES = [
    ("p1", "a", 0.9),  # right
    ("p1", "a", 0.4),  # wrong
    ("p1", "a", 0.8),  # right: p1 2/3 of tiles right; mean P(a) 0.7 -> a; votes a
    ("p2", "b", 0.45),  # right
    ("p2", "b", 0.6),  # wrong: p2 1/2 right; mean P(a) 0.525 -> a (wrong); votes tie -> a
    ("p3", "b", 0.2),  # p3 1/1 right
    ("p4", "b", 0.51),  # wrong
    ("p4", "b", 0.51),  # wrong
    ("p4", "b", 0.0),  # right: p4 1/3 right; mean P(a) 0.34 -> b (right); votes a (wrong)
]


def _cases(method):
    patients, labels, p_a = zip(*TILES, strict=True)
    probs = np.stack([p_a, 1 - np.array(p_a)], 1)
    return aggregate_cases(
        pd.Series(patients), probs, CLASSES, labels=pd.Series(labels), method=method
    )


def test_patient_aggregation_matches_the_hand_computed_example():
    cases = _cases("mean")
    assert cases["case"].tolist() == ["p1", "p2", "p3", "p4"]
    assert cases["n_images"].tolist() == [3, 2, 1, 3]
    assert cases["predicted"].tolist() == ["a", "a", "b", "b"]
    assert cases["label"].tolist() == ["a", "b", "b", "b"]
    assert cases["prob_a"].to_numpy() == pytest.approx([0.7, 0.525, 0.2, 0.34])
    assert cases["share_correct"].to_numpy() == pytest.approx([2 / 3, 1 / 2, 1, 1 / 3])
    m = case_metrics(cases, CLASSES, resamples=200, seed=0)
    # BreakHis patient recognition rate: mean over patients of their share of tiles right.
    assert m["recognition_rate"] == pytest.approx((2 / 3 + 1 / 2 + 1 + 1 / 3) / 4)
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["macro_recall"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["n"] == 4
    for k in ("recognition_rate", "accuracy", "macro_recall"):
        low, high = m["ci"][k]
        assert low <= m[k] <= high  # resampling 4 patients: a wide interval around the point


def test_majority_vote_counts_tiles_and_breaks_ties_by_mean_probability():
    cases = _cases("vote")
    assert cases["predicted"].tolist() == ["a", "a", "b", "a"]  # p2 tie -> a; p4 2 votes a
    m = case_metrics(cases, CLASSES, resamples=50, seed=0)
    assert m["accuracy"] == pytest.approx(2 / 4)
    assert m["macro_recall"] == pytest.approx((1 + 1 / 3) / 2)
    with pytest.raises(ValueError, match="'mean' or 'vote'"):
        _cases("median")
