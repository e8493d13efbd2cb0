"""Classification metrics on predicted probabilities, exact and under bootstrap resampling.

Headline metrics are computed from a matrix of sample weights ``W`` (R, N): ``W = 1`` gives the
plain metric, and each row of a multinomial draw gives one bootstrap resample. One code path for
both, so a confidence interval always brackets the same definition as its point estimate, and R
resamples cost a few matrix products instead of R Python loops.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

__all__ = [
    "HEADLINE",
    "WORST_CASE",
    "BootstrapWeights",
    "bootstrap_ci",
    "bootstrap_weights",
    "classification_metrics",
    "headline_metrics",
    "label_metrics",
    "macro_recall",
    "paired_difference",
    "weight_blocks",
]

# Metrics with a bootstrap 95% CI in evaluate.json (ece: lower is better; the rest higher).
HEADLINE = (
    "accuracy",
    "balanced_accuracy",
    "macro_recall",
    "macro_f1",
    "auroc",
    "average_precision",
    "ece",
)
# evaluate.json (and the MLflow run): the lowest macro recall of the robustness certificate.
WORST_CASE = "worst_case_macro_recall"


def macro_recall(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean per-class recall over classes present in ``y_true`` (the BraTS selection metric)."""
    return (
        float(
            skm.recall_score(
                y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0
            )
        )
        if len(y_true)
        else 0.0
    )


def headline_metrics(
    y_true: np.ndarray, probs: np.ndarray, weights: np.ndarray | None = None, *, bins: int = 15
) -> dict[str, np.ndarray]:
    """The :data:`HEADLINE` metrics under each row of sample weights.

    Args:
        y_true: (N,) integer labels.
        probs: (N, C) class probabilities.
        weights: (R, N) non-negative sample weights (bootstrap counts); None = one row of ones.
        bins: equal-width confidence bins for the expected calibration error.

    Returns:
        {metric: (R,) values}. Macro averages run over the classes present under each row's
        weights (as sklearn does for recall); AUROC and AP are one-vs-rest, macro-averaged.
    """
    y_true = np.asarray(y_true)
    n, c = probs.shape
    w = np.ones((1, n)) if weights is None else np.asarray(weights, dtype=float)
    pred = probs.argmax(1)
    correct = (pred == y_true).astype(float)  # (N,)
    total = w.sum(1)  # (R,)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # ECE: |confidence - accuracy| per bin, weighted by the bin's share of samples.
        conf = probs.max(1)
        bin_of = np.minimum((conf * bins).astype(int), bins - 1)
        gap = w @ (np.eye(bins)[bin_of] * (conf - correct)[:, None])  # (R, bins)
        ece = np.abs(gap).sum(1) / total
        auroc = np.nanmean(
            np.stack([_weighted_auroc(probs[:, k], y_true == k, w) for k in range(c)], 1), 1
        )
        ap = np.nanmean(
            np.stack([_weighted_ap(probs[:, k], y_true == k, w) for k in range(c)], 1), 1
        )
    return label_metrics(y_true, pred, c, w) | {
        "auroc": auroc,
        "average_precision": ap,
        "ece": ece,
    }


def label_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, weights: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The headline metrics that need only predicted labels, under each row of weights.

    ``accuracy``, ``balanced_accuracy``, ``macro_recall`` and ``macro_f1``, defined exactly as
    :func:`headline_metrics` reports them (it calls this); for the frozen-feature probes, which
    score thousands of episodes and have no probabilities.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    w = np.ones((1, len(y_true))) if weights is None else np.asarray(weights, dtype=float)
    onehot = np.eye(num_classes)[y_true]  # (N, C)
    correct = (y_pred == y_true).astype(float)  # (N,)
    support = w @ onehot  # (R, C) weighted true counts
    predicted = w @ np.eye(num_classes)[y_pred]  # (R, C) weighted predicted counts
    tp = w @ (onehot * correct[:, None])  # (R, C)
    present = support > 0
    # A class absent under some weights has no recall: NaN, left out of the mean.
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        recall = np.where(present, tp / support, np.nan)
        f1 = np.where(present, 2 * tp / (support + predicted), np.nan)
        macro_r = np.nanmean(recall, 1)
        macro_f1 = np.nanmean(f1, 1)
    return {
        "accuracy": (w @ correct) / w.sum(1),
        "balanced_accuracy": macro_r,
        "macro_recall": macro_r,
        "macro_f1": macro_f1,
    }


def _tie_groups(scores: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sort order and the start of each run of equal scores in it."""
    order = np.argsort(-scores if descending else scores, kind="mergesort")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return order, starts


def _weighted_auroc(scores: np.ndarray, positive: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC per weight row (R,): P(score_pos > score_neg) + half the ties."""
    order, starts = _tie_groups(scores, descending=False)
    ws = w[:, order]  # (R, N) in ascending score order
    pos_g = np.add.reduceat(ws * positive[order], starts, axis=1)  # (R, G) per tie group
    neg_g = np.add.reduceat(ws * ~positive[order], starts, axis=1)
    neg_below = np.cumsum(neg_g, 1) - neg_g
    n_pos, n_neg = pos_g.sum(1), neg_g.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos_g * (neg_below + 0.5 * neg_g)).sum(1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def _weighted_ap(scores: np.ndarray, positive: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average precision per weight row (R,), sklearn's step definition: sum dR * P."""
    order, starts = _tie_groups(scores, descending=True)
    ws = w[:, order]
    tp_g = np.add.reduceat(ws * positive[order], starts, axis=1)  # (R, G)
    fp_g = np.add.reduceat(ws * ~positive[order], starts, axis=1)
    tp, fp = np.cumsum(tp_g, 1), np.cumsum(fp_g, 1)
    n_pos = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        ap = (tp_g * precision).sum(1) / n_pos
    return np.where(n_pos > 0, ap, np.nan)


def bootstrap_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(R, N) resample counts: row r says how often each sample appears in resample r."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)


class BootstrapWeights:
    """:func:`bootstrap_weights`' rows, drawn a block at a time whenever they are used.

    The (R, N) matrix grows with the test set (1,000 x 65,000 float64 is 520 MB, and the
    weighted metrics make a few more of that size); drawn in blocks of about 32 MB from the
    same seed, the rows are the same and the memory is flat. Pass it wherever a weights matrix
    goes in :func:`bootstrap_ci` and :func:`paired_difference`.

    Args:
        n: samples.
        resamples: rows (R).
        seed: the same seed gives the same rows as ``bootstrap_weights(n, resamples, seed)``.
    """

    _BLOCK_BYTES = 2**25

    def __init__(self, n: int, resamples: int, seed: int):
        self.n, self.resamples, self.seed = n, resamples, seed

    def blocks(self):
        """Consecutive row blocks (r, N) of the weights matrix, float64."""
        rng = np.random.default_rng(self.seed)  # sequential draws: blocks = the whole matrix
        step = max(1, self._BLOCK_BYTES // (8 * max(self.n, 1)))
        for start in range(0, self.resamples, step):
            size = min(step, self.resamples - start)
            yield rng.multinomial(self.n, np.full(self.n, 1.0 / self.n), size=size).astype(float)


def weight_blocks(weights: np.ndarray | BootstrapWeights):
    """Row blocks (r, N) of a weights matrix: the matrix itself, or :class:`BootstrapWeights`' draws."""
    return weights.blocks() if isinstance(weights, BootstrapWeights) else [weights]


def _resampled(y_true, probs, weights, bins: int = 15) -> dict[str, np.ndarray]:
    """:func:`headline_metrics` under a weights matrix or :class:`BootstrapWeights` blocks."""
    parts = [headline_metrics(y_true, probs, w, bins=bins) for w in weight_blocks(weights)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def bootstrap_ci(
    y_true: np.ndarray,
    probs: np.ndarray,
    weights: np.ndarray | BootstrapWeights,
    *,
    level: float = 0.95,
    bins: int = 15,
) -> dict[str, list[float]]:
    """Percentile bootstrap CIs {metric: [low, high]} for the :data:`HEADLINE` metrics."""
    stats = _resampled(y_true, probs, weights, bins=bins)
    q = [50 * (1 - level), 50 * (1 + level)]
    out = {}
    for name, values in stats.items():
        finite = values[np.isfinite(values)]
        out[name] = [float(v) for v in np.percentile(finite, q)] if len(finite) else [None, None]
    return out


def paired_difference(
    y_true: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    weights: np.ndarray | BootstrapWeights,
    *,
    metric: str = "macro_recall",
    level: float = 0.95,
) -> dict:
    """``metric(a) - metric(b)`` on the same resamples: the estimate, its CI, and a verdict.

    Pairing matters: both models see the same resampled test set, so the difference's CI is
    much narrower than comparing two separate CIs.
    """
    a = _resampled(y_true, probs_a, weights)[metric]
    b = _resampled(y_true, probs_b, weights)[metric]
    diff = (a - b)[np.isfinite(a - b)]
    point = float(headline_metrics(y_true, probs_a)[metric][0]) - float(
        headline_metrics(y_true, probs_b)[metric][0]
    )
    low, high = (float(v) for v in np.percentile(diff, [50 * (1 - level), 50 * (1 + level)]))
    verdict = "better" if low > 0 else "worse" if high < 0 else "no clear difference"
    return {"metric": metric, "difference": point, "ci": [low, high], "verdict": verdict}


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], *, bins: int = 15
) -> dict:
    """Headline and per-class metrics.

    Args:
        y_true: (N,) integer labels.
        probs: (N, C) class probabilities.
        classes: the C class names.
        bins: confidence bins for the expected calibration error.

    Returns:
        the :data:`HEADLINE` metrics (macro one-vs-rest AUROC and AP over present classes; NaN
        if none can be scored), ``n``, ``per_class`` {name: {precision, recall, f1, support,
        auroc, average_precision}} and ``confusion_matrix`` (C x C counts, rows = true).
    """
    y_true = np.asarray(y_true)
    y_pred = probs.argmax(1)
    labels = np.arange(len(classes))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    ones = np.ones((1, len(y_true)))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_auroc = [_weighted_auroc(probs[:, k], y_true == k, ones)[0] for k in labels]
        per_ap = [_weighted_ap(probs[:, k], y_true == k, ones)[0] for k in labels]
    out = {k: float(v[0]) for k, v in headline_metrics(y_true, probs, bins=bins).items()}
    out["n"] = len(y_true)
    out["per_class"] = {
        name: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
            "auroc": float(per_auroc[i]),
            "average_precision": float(per_ap[i]),
        }
        for i, name in enumerate(classes)
    }
    out["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out
