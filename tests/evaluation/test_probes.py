"""Frozen-feature probes give known results on embeddings whose structure is known."""

from __future__ import annotations

import numpy as np
import pytest

from histoflow.config import ProbesConfig
from histoflow.evaluation.probes import (
    few_shot,
    grouped_cv,
    knn_probe,
    linear_probe,
    probe_store,
    run_probes,
)


def _blobs(n_per_class: int, classes: int, spread: float, seed: int):
    """Gaussian clusters on the axes of a 16-d space: ``spread`` sets how much they overlap."""
    rng = np.random.default_rng(seed)
    x = np.concatenate(
        [np.eye(16)[c] * 4 + rng.normal(0, spread, (n_per_class, 16)) for c in range(classes)]
    )
    y = np.repeat(np.arange(classes), n_per_class)
    return x.astype(np.float32), y


def test_separable_embeddings_are_classified_perfectly_by_every_probe():
    train_x, train_y = _blobs(40, 4, 0.3, seed=0)
    test_x, test_y = _blobs(20, 4, 0.3, seed=1)
    results = run_probes(train_x, train_y, test_x, test_y, seeds=[0, 1], shots=[1, 5], episodes=5)
    assert [r.probe for r in results] == ["linear", "knn20", "fewshot_1", "fewshot_5"]
    for result in results:
        summary = result.summary()
        assert summary["macro_recall"] == 1.0 and summary["macro_recall_std"] == 0.0, result.probe


def test_noise_embeddings_score_chance():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(600, 16)), rng.integers(0, 3, 600)
    results = run_probes(
        x[:400], y[:400], x[400:], y[400:], seeds=[0, 1, 2], shots=[5], episodes=20
    )
    for result in results:
        assert abs(result.summary()["macro_recall"] - 1 / 3) < 0.12, result.probe


def test_knn_votes_its_k_nearest_by_cosine():
    train = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.2, 0.8]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1, 1])
    test = np.array([[10, 1], [1, 10]], dtype=np.float32)  # scale does not matter for cosine
    assert knn_probe(train, labels, test, k=3).tolist() == [0, 1]  # 2 of 3 nearest vote
    assert knn_probe(train, labels, test, k=5).tolist() == [1, 1]  # the majority overall


def test_seeds_change_results_and_the_same_seed_repeats_them():
    train_x, train_y = _blobs(30, 3, 2.5, seed=0)  # overlapping: the probe's luck shows
    test_x, _ = _blobs(30, 3, 2.5, seed=1)
    first = [linear_probe(train_x, train_y, test_x, seed) for seed in (0, 1, 2)]
    again = linear_probe(train_x, train_y, test_x, 0)
    assert np.array_equal(first[0], again)
    assert not (np.array_equal(first[0], first[1]) and np.array_equal(first[1], first[2]))
    one = few_shot(train_x, train_y, test_x, 1, np.random.default_rng(0))
    same = few_shot(train_x, train_y, test_x, 1, np.random.default_rng(0))
    other = few_shot(train_x, train_y, test_x, 1, np.random.default_rng(1))
    assert np.array_equal(one, same) and not np.array_equal(one, other)


def test_few_shot_uses_k_shots_per_class():
    # One shot from a far-off outlier of class 1 misleads it; many shots do not.
    train_x = np.array([[1, 0]] * 10 + [[0, 1]] * 9 + [[-1, -0.01]], dtype=np.float32)
    train_y = np.array([0] * 10 + [1] * 10)
    test_x = np.array([[0.1, 1.0]], dtype=np.float32)
    assert few_shot(train_x, train_y, test_x, 10, np.random.default_rng(0)).tolist() == [1]


def test_grouped_cv_never_splits_a_group_and_needs_enough_groups():
    # 40 cases of 5 near-identical tiles each; a case's label is random, so nothing carries
    # over between cases: only a fold that splits a case could score above chance.
    rng = np.random.default_rng(0)
    centres, labels = rng.normal(size=(40, 16)), rng.integers(0, 2, 40)
    x = np.repeat(centres, 5, axis=0) + rng.normal(0, 0.01, (200, 16))
    y, groups = np.repeat(labels, 5), np.repeat(np.arange(40), 5)
    results = grouped_cv(x, y, groups, folds=5, k=3)
    assert [r.probe for r in results] == ["linear", "knn3"] and len(results[0].per_seed) == 5
    assert results[1].summary()["macro_recall"] < 0.75  # chance: no case on both sides
    shuffled = grouped_cv(x, y, np.arange(200), folds=5, k=3)  # every tile its own group
    assert shuffled[1].summary()["macro_recall"] > 0.95  # copies on both sides: leakage
    with pytest.raises(ValueError, match="at least 5 groups"):
        grouped_cv(x, y, np.arange(200) // 50, folds=5)


def test_a_training_set_too_small_to_hold_out_every_class_still_gets_a_linear_probe():
    # Six classes, 30 rows: sklearn's early-stopping split (10%) cannot hold every class, and
    # the probe used to raise; a tiny project's evaluate probes exactly such a set.
    train_x, train_y = _blobs(5, 6, 0.3, seed=0)
    test_x, test_y = _blobs(4, 6, 0.3, seed=1)
    assert (linear_probe(train_x, train_y, test_x, 0) == test_y).all()


def test_few_shot_picks_the_nearest_centroid_by_cosine_after_centring():
    # SimpleShot as written: centre on the shots' mean, L2-normalise shots, centroids and
    # queries, take the most similar centroid (few_shot skips normalising the queries).
    train_x, train_y = _blobs(12, 3, 2.0, seed=0)
    test_x, _ = _blobs(15, 3, 2.0, seed=1)
    got = few_shot(train_x, train_y, test_x, 4, np.random.default_rng(3))

    rng = np.random.default_rng(3)
    picked = np.concatenate([rng.choice(np.flatnonzero(train_y == c), 4, False) for c in range(3)])
    support, labels = train_x[picked], train_y[picked]
    centre = support.mean(0)

    def unit(v):
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    centroids = unit(np.stack([unit(support - centre)[labels == c].mean(0) for c in range(3)]))
    expected = np.argmax(unit(test_x - centre) @ centroids.T, axis=1)
    assert np.array_equal(got, expected)


def test_a_large_store_is_probed_on_a_stratified_draw_of_its_rows(tmp_path, feature_store):
    import pandas as pd
    import torch

    x, y = _blobs(100, 3, 0.3, seed=0)  # 300 rows: 240 fit, 60 test
    split = np.where(np.arange(300) % 5 == 0, "test", "train")
    index = pd.DataFrame({"path": [f"{i}.png" for i in range(300)], "label": y, "split": split})
    store = feature_store(tmp_path, {"image_pooled": torch.from_numpy(x).half()}, index)
    p = ProbesConfig(seeds=2, episodes=3, max_rows=100)

    probed = probe_store(store, index, [0, 1, 2], p)

    assert probed["n_fit"] == 99 and probed["n_test"] == 60  # 33 a class; test under the cap
    assert probed["results"]["linear"]["macro_recall"] == 1.0
    assert probed == probe_store(store, index, [0, 1, 2], p)  # the same draw every run
