"""Frozen-feature probes: how the field compares encoders, on embeddings computed once.

As kaiko-ai/eva and UNI report encoders: a linear probe (logistic regression trained by SGD on
standardised features), k nearest neighbours (cosine similarity, k = 20) and few-shot
classification (SimpleShot: class centroids of k shots per class after centring on the
training mean and L2 normalisation, scored over many episodes), each repeated over seeds and
reported as mean +- std with the per-seed values. Neighbours are found with faiss (exact inner
product on L2-normalised vectors), so kNN stays fast at hundreds of thousands of tiles.

Optionally (``folds``), the same probes are scored by k-fold cross-validation grouped by
patient (or any group column), so that tiles of one case never sit on both sides.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from histoflow.config import ProbesConfig
from histoflow.metrics import label_metrics

__all__ = [
    "PROBE_METRICS",
    "ProbeResult",
    "few_shot",
    "grouped_cv",
    "knn_probe",
    "linear_probe",
    "probe_store",
    "run_probes",
    "stratified_draw",
]

# What each probe reports per seed: the headline metrics that need only predicted labels.
PROBE_METRICS = ("macro_recall", "balanced_accuracy", "accuracy", "macro_f1")


@dataclass
class ProbeResult:
    """One probe over seeds: the per-seed metrics and their mean and standard deviation.

    ``seconds`` is what producing the result took, when the caller measured it.
    """

    probe: str
    seeds: list[int]
    per_seed: list[dict[str, float]] = field(default_factory=list)
    seconds: float = float("nan")

    def summary(self) -> dict[str, float]:
        """``{metric: mean, metric_std: std}`` over seeds (std 0 for a single seed)."""
        out = {}
        for name in PROBE_METRICS:
            values = np.array([m[name] for m in self.per_seed], dtype=float)
            out[name] = float(values.mean())
            out[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        return out


def _scores(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    # The label-based headline metrics, defined as everywhere else (not AUROC: no scores).
    stats = label_metrics(y_true, y_pred, num_classes)
    return {name: float(stats[name][0]) for name in PROBE_METRICS}


def linear_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int
) -> np.ndarray:
    """Predicted labels of a logistic regression trained by SGD on standardised features.

    The seed sets the initial order of the training samples (and SGD's own randomness), so
    repeats over seeds show how much the probe itself varies.
    """
    # Early stopping holds out a stratified 10% of the rows: only when that can hold every
    # class (sklearn refuses otherwise); a small training set trains to convergence instead.
    counts = np.unique(train_y, return_counts=True)[1]
    early = bool(counts.min() >= 2 and math.ceil(0.1 * len(train_y)) >= len(counts))
    model = make_pipeline(
        StandardScaler(),
        SGDClassifier(
            loss="log_loss",
            alpha=1e-4,
            max_iter=200,
            tol=1e-4,
            early_stopping=early,
            n_iter_no_change=10,
            random_state=seed,
        ),
    )
    with warnings.catch_warnings():
        if not early:  # a few dozen rows may not settle within max_iter epochs: expected
            warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(train_x, train_y).predict(test_x)


def _normalise(x: np.ndarray, centre: np.ndarray | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if centre is not None:
        x = x - centre
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = 20
) -> np.ndarray:
    """Predicted labels by majority vote of the ``k`` nearest training vectors (cosine).

    Ties are broken by summed similarity, so the vote is deterministic.
    """
    import faiss  # exact inner product over L2-normalised vectors = cosine

    train, test = _normalise(train_x), _normalise(test_x)
    index = faiss.IndexFlatIP(train.shape[1])
    index.add(np.ascontiguousarray(train))
    k = min(k, len(train))
    sims, idx = index.search(np.ascontiguousarray(test), k)  # (N, k)
    num_classes = int(train_y.max()) + 1
    votes = np.zeros((len(test), num_classes))
    np.add.at(votes, (np.arange(len(test))[:, None], train_y[idx]), 1.0)
    weight = np.zeros((len(test), num_classes))
    np.add.at(weight, (np.arange(len(test))[:, None], train_y[idx]), sims)
    return np.argmax(votes + 1e-6 * weight / max(k, 1), axis=1)


def few_shot(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    shots: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """SimpleShot predictions from ``shots`` training vectors per class, drawn with ``rng``.

    Vectors are centred on the mean of the drawn shots and L2-normalised; each test vector
    takes the class of the nearest class centroid. A class with fewer training vectors than
    ``shots`` uses all it has.
    """
    classes = np.unique(train_y)
    picked = np.concatenate(
        [
            rng.choice(np.flatnonzero(train_y == c), min(shots, int((train_y == c).sum())), False)
            for c in classes
        ]
    )
    support, labels = np.asarray(train_x[picked], dtype=np.float32), train_y[picked]
    centre = support.mean(0)
    support = _normalise(support, centre)
    centroids = _normalise(np.stack([support[labels == c].mean(0) for c in classes]))
    # A query's own norm scales all its class scores alike, so the nearest centroid by cosine
    # is the argmax of (q - centre) . centroid: no normalised (N, D) copy of the test set per
    # episode (that copy was most of the probes' time at 10,000 x 1,280).
    scores = np.asarray(test_x, dtype=np.float32) @ centroids.T - centre @ centroids.T
    return classes[np.argmax(scores, axis=1)]


def run_probes(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    k: int = 20,
    shots: Sequence[int] = (1, 5, 10),
    episodes: int = 100,
) -> list[ProbeResult]:
    """Linear probe, kNN and few-shot (one result per shot count), each over ``seeds``.

    Args:
        train_x: (N, D) training embeddings.
        train_y: (N,) their class indices.
        test_x: (M, D) test embeddings.
        test_y: (M,) their class indices.
        seeds: one repeat per seed (few-shot: ``episodes`` episodes per seed, averaged).
        k: neighbours of the kNN probe.
        shots: shots per class of the few-shot probes.
        episodes: few-shot episodes per seed.

    Returns:
        ``linear``, ``knn`` and ``fewshot_<n>`` results, in that order.
    """
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    seeds = list(seeds)
    results = [ProbeResult("linear", seeds), ProbeResult(f"knn{k}", seeds)]
    results += [ProbeResult(f"fewshot_{n}", seeds) for n in shots]
    knn = _scores(test_y, knn_probe(train_x, train_y, test_x, k), num_classes)  # seedless
    for seed in seeds:
        results[0].per_seed.append(
            _scores(test_y, linear_probe(train_x, train_y, test_x, seed), num_classes)
        )
        results[1].per_seed.append(knn)
        rng = np.random.default_rng(seed)
        for result, n in zip(results[2:], shots, strict=True):
            episode = [
                _scores(test_y, few_shot(train_x, train_y, test_x, n, rng), num_classes)
                for _ in range(episodes)
            ]
            result.per_seed.append(
                {m: float(np.mean([e[m] for e in episode])) for m in PROBE_METRICS}
            )
    return results


def grouped_cv(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    k: int = 20,
) -> list[ProbeResult]:
    """Linear and kNN probes by ``folds``-fold cross-validation grouped by ``groups``.

    Folds are stratified by class and never split a group (patient, slide); each fold is one
    entry of the result's ``per_seed`` list (its ``seeds`` are the fold numbers).

    Raises:
        ValueError: fewer groups than folds.
    """
    if len(np.unique(groups)) < folds:
        raise ValueError(
            f"grouped cross-validation needs at least {folds} groups; the data has "
            f"{len(np.unique(groups))}: lower the number of folds"
        )
    num_classes = int(y.max()) + 1
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    linear, knn = ProbeResult("linear", []), ProbeResult(f"knn{k}", [])
    for fold, (train, test) in enumerate(splitter.split(x, y, groups)):
        linear.seeds.append(fold)
        knn.seeds.append(fold)
        linear.per_seed.append(
            _scores(y[test], linear_probe(x[train], y[train], x[test], seed), num_classes)
        )
        knn.per_seed.append(
            _scores(y[test], knn_probe(x[train], y[train], x[test], k), num_classes)
        )
    return [linear, knn]


def stratified_draw(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """About ``n`` sorted positions of ``y``, each class drawn in proportion (at least one).

    How a protocol that must not grow with the data (the probes here, the robustness
    certificate) picks its rows: seeded, so the same rows every run.
    """
    rng = np.random.default_rng(seed)
    drawn = [
        rng.choice(rows, max(1, round(n * len(rows) / len(y))), replace=False)
        for rows in (np.flatnonzero(y == c) for c in np.unique(y))
    ]
    return np.sort(np.concatenate(drawn))


def probe_store(store, index, classes: Sequence[str], p: ProbesConfig) -> dict:
    """Every probe on a feature store's pooled image embeddings: train + val fit, test scored.

    At most ``p.max_rows`` fit and test rows each (:func:`stratified_draw`, seed 0: the same
    rows for every seed and encoder), read from the store, never the whole of it.

    Args:
        store: a :class:`~histoflow.embeddings.store.FeatureStore` (``read("image_pooled", rows)``).
        index: the store's index (``label``, ``split`` per row).
        classes: class names in label-index order.
        p: the ``evaluate.probes`` params.

    Returns:
        ``{"features", "n_fit", "n_test", "seeds", "results": {probe: mean, std and per-seed
        values of each probe metric}}``.
    """
    split = index["split"].to_numpy()
    y = np.array([list(classes).index(c) for c in index["label"]])

    def capped(rows: np.ndarray) -> np.ndarray:
        return rows[stratified_draw(y[rows], p.max_rows, 0)] if len(rows) > p.max_rows else rows

    fit = capped(np.flatnonzero(np.isin(split, ["train", "val"])))
    test = capped(np.flatnonzero(split == "test"))
    results = run_probes(
        store.read("image_pooled", fit).astype(np.float32),
        y[fit],
        store.read("image_pooled", test).astype(np.float32),
        y[test],
        seeds=range(p.seeds),
        k=p.k,
        shots=p.shots,
        episodes=p.episodes,
    )
    return {
        "features": "image_pooled",
        "n_fit": len(fit),
        "n_test": len(test),
        "seeds": list(range(p.seeds)),
        "results": {
            r.probe: r.summary()
            | {f"per_seed_{m}": [s[m] for s in r.per_seed] for m in PROBE_METRICS}
            for r in results
        },
    }
