"""Classification metrics on predicted probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

__all__ = ["classification_metrics", "macro_recall"]


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


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict:
    """Headline and per-class metrics.

    Args:
        y_true: (N,) integer labels.
        probs: (N, C) class probabilities.
        classes: the C class names.

    Returns:
        ``accuracy``, ``balanced_accuracy``, ``macro_recall``, ``macro_f1``, ``auroc`` (macro
        one-vs-rest; NaN if a class is missing), ``per_class`` {name: {precision, recall, f1,
        support}} and ``confusion_matrix`` (C x C counts, rows = true).
    """
    y_pred = probs.argmax(1)
    labels = np.arange(len(classes))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = np.unique(y_true)
    try:
        if len(classes) == 2:
            auroc = skm.roc_auc_score(y_true, probs[:, 1])
        else:
            auroc = skm.roc_auc_score(
                y_true, probs, multi_class="ovr", average="macro", labels=labels
            )
    except ValueError:  # a class absent from y_true: AUROC is undefined, not zero
        auroc = float("nan")
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "macro_recall": float(r[present].mean()),
        "macro_f1": float(f[present].mean()),
        "auroc": float(auroc),
        "n": len(y_true),
        "per_class": {
            name: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
