"""Metrics against hand-computed values, sklearn, and the bootstrap's coverage."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from histoflow.metrics import (
    BootstrapWeights,
    bootstrap_ci,
    bootstrap_weights,
    classification_metrics,
    headline_metrics,
    label_metrics,
    paired_difference,
)

# Four samples, two classes. Predictions: 0, 1, 1, 1 -> samples 0, 2, 3 correct.
Y = np.array([0, 0, 1, 1])
P = np.array([[0.9, 0.1], [0.4, 0.6], [0.45, 0.55], [0.2, 0.8]])


def test_headline_metrics_by_hand():
    m = classification_metrics(Y, P, ["a", "b"], bins=10)
    assert m["accuracy"] == pytest.approx(0.75)
    # recall a = 1/2, recall b = 2/2 -> macro 0.75; precision a = 1, b = 2/3
    assert m["macro_recall"] == m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    # F1 a = 2*1*0.5/1.5 = 2/3, F1 b = 2*(2/3)*1/(5/3) = 0.8
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    # AUROC b: positives 0.55, 0.8 vs negatives 0.1, 0.6 -> 3 of 4 pairs ordered; a likewise
    assert m["auroc"] == pytest.approx(0.75)
    # AP b: ranking 0.8(+) 0.6(-) 0.55(+) 0.1(-): recall steps at rank 1 (P=1), rank 3 (P=2/3)
    assert m["per_class"]["b"]["average_precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["average_precision"] == pytest.approx((1 + 2 / 3) / 2)
    # ECE, 10 bins of confidence, one sample per bin: 0.9 (right), 0.6 (wrong), 0.55 (right),
    # 0.8 (right) -> mean of |0.9-1|, |0.6-0|, |0.55-1|, |0.8-1|
    assert m["ece"] == pytest.approx((0.1 + 0.6 + 0.45 + 0.2) / 4)
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]


def test_ece_pools_samples_within_a_bin():
    # Both confidences fall in the 0.7-0.8 bin: |mean conf - accuracy| = |0.75 - 0.5| once.
    y = np.array([0, 1])
    p = np.array([[0.72, 0.28], [0.78, 0.22]])
    assert headline_metrics(y, p, bins=10)["ece"][0] == pytest.approx(0.25)


def test_point_estimates_match_sklearn_with_ties_and_three_classes():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + 1.5 * np.eye(3)[y]
    p = np.round(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 2)  # ties on purpose
    p = p / p.sum(1, keepdims=True)
    m = classification_metrics(y, p, ["a", "b", "c"])
    pred = p.argmax(1)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"))
    onehot = np.eye(3)[y]
    assert m["average_precision"] == pytest.approx(
        skm.average_precision_score(onehot, p, average="macro")
    )


def test_weights_equal_duplicated_samples():
    # Weight 2 on a sample is the same as the sample appearing twice.
    w = np.array([[2.0, 1.0, 0.0, 1.0]])
    dup = [0, 0, 1, 3]
    a = headline_metrics(Y, P, w)
    b = headline_metrics(Y[dup], P[dup])
    for k in a:
        assert a[k][0] == pytest.approx(b[k][0], nan_ok=True), k


def test_bootstrap_ci_covers_the_true_accuracy_about_95_percent():
    # A classifier that is right with probability 0.8: over many test sets, the 95% CI of its
    # accuracy should contain 0.8 about 95% of the time (percentile bootstrap, n = 150).
    rng = np.random.default_rng(1)
    n, reps, hits = 150, 300, 0
    weights = bootstrap_weights(n, 400, seed=2)
    for _ in range(reps):
        y = rng.integers(0, 2, n)
        right = rng.random(n) < 0.8
        pred = np.where(right, y, 1 - y)
        probs = np.eye(2)[pred] * 0.5 + 0.25
        low, high = bootstrap_ci(y, probs, weights)["accuracy"]
        hits += low <= 0.8 <= high
    assert 0.91 <= hits / reps <= 0.98


def test_bootstrap_is_seeded():
    assert np.array_equal(bootstrap_weights(10, 5, 3), bootstrap_weights(10, 5, 3))
    assert bootstrap_weights(10, 5, 3).sum(1).tolist() == [10] * 5


def test_paired_difference_detects_a_better_model_and_not_an_equal_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    good = np.eye(3)[np.where(rng.random(300) < 0.9, y, (y + 1) % 3)]
    bad = np.eye(3)[np.where(rng.random(300) < 0.6, y, (y + 1) % 3)]
    w = bootstrap_weights(300, 500, 0)
    better = paired_difference(y, good, bad, w)
    assert better["verdict"] == "better" and better["ci"][0] > 0
    assert paired_difference(y, good, good, w)["verdict"] == "no clear difference"
    assert paired_difference(y, bad, good, w)["verdict"] == "worse"


def test_bootstrap_weights_in_blocks_give_the_same_resamples_and_intervals(monkeypatch):
    monkeypatch.setattr(BootstrapWeights, "_BLOCK_BYTES", 8 * 300 * 7)  # blocks of 7 rows
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    probs = rng.dirichlet(np.ones(3), 300)
    lazy, whole = BootstrapWeights(300, 50, 4), bootstrap_weights(300, 50, 4)
    assert [len(b) for b in lazy.blocks()] == [7] * 7 + [1]
    assert np.array_equal(np.concatenate(list(lazy.blocks())), whole)
    assert bootstrap_ci(y, probs, lazy) == bootstrap_ci(y, probs, whole)
    other = np.roll(probs, 1, axis=1)
    assert paired_difference(y, probs, other, lazy) == paired_difference(y, probs, other, whole)


def test_label_metrics_are_the_headline_label_metrics_and_match_sklearn():
    # The probes score labels only; they must mean what evaluate's metrics mean.
    rng = np.random.default_rng(1)
    y, pred = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    pred[:150] = y[:150]
    probs = np.eye(4)[pred] * 0.7 + 0.075
    w = rng.integers(0, 3, (5, 300)).astype(float)
    labels, headline = label_metrics(y, pred, 4, w), headline_metrics(y, probs, w)
    assert set(labels) == {"accuracy", "balanced_accuracy", "macro_recall", "macro_f1"}
    for k, values in labels.items():
        np.testing.assert_array_equal(values, headline[k], err_msg=k)
    one = label_metrics(y, pred, 4)
    assert one["macro_f1"][0] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert one["accuracy"][0] == pytest.approx(skm.accuracy_score(y, pred))
