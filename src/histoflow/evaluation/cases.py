"""Case-level results: tile predictions aggregated per patient (or slide), as the field reports.

A pathologist diagnoses a patient, not a tile. :func:`aggregate_cases` turns one row per tile
into one row per case (mean probabilities, or a majority vote of the tiles), and
:func:`case_metrics` scores the cases with BreakHis's *patient recognition rate* (Spanhol et
al., 2016: the mean over patients of the share of that patient's images classified correctly)
and case-level accuracy and macro recall, with bootstrap CIs that resample cases, not images:
the tiles of one patient are not independent evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from histoflow.io import atomic_path
from histoflow.metrics import bootstrap_weights

__all__ = ["aggregate_cases", "case_metrics", "case_results"]

Method = Literal["mean", "vote"]


def aggregate_cases(
    cases: pd.Series,
    probs: np.ndarray,
    classes: Sequence[str],
    *,
    labels: pd.Series | None = None,
    method: Method = "mean",
) -> pd.DataFrame:
    """One row per case: its tiles' aggregated prediction (and, with labels, how they fared).

    Args:
        cases: (N,) the case each tile belongs to (e.g. ``patient_id``).
        probs: (N, C) tile probabilities.
        classes: the C class names.
        labels: (N,) true tile labels, or None (prediction without ground truth).
        method: ``mean`` (argmax of the mean probabilities) or ``vote`` (the class most tiles
            predict; ties go to the higher mean probability).

    Returns:
        Columns ``case``, ``n_images``, ``predicted``, ``prob_<class>`` (mean over tiles),
        ``votes_<class>`` and, with labels, ``label`` (the case's most frequent tile label) and
        ``share_correct`` (its tiles classified correctly), sorted by case.
    """
    if method not in ("mean", "vote"):
        raise ValueError(f"case aggregation must be 'mean' or 'vote', got {method!r}")
    c = len(classes)
    frame = pd.DataFrame(probs, columns=[f"prob_{k}" for k in classes])
    tile_pred = probs.argmax(1)
    votes = pd.DataFrame(np.eye(c, dtype=int)[tile_pred], columns=[f"votes_{k}" for k in classes])
    key = pd.Series(np.asarray(cases).astype(str), name="case")
    mean = frame.groupby(key).mean()
    counts = votes.groupby(key).sum()
    if method == "mean":
        winner = mean.to_numpy().argmax(1)
    else:
        # Most votes; among tied classes the higher mean probability (a vote is worth 2, more
        # than any difference of mean probabilities).
        winner = (counts.to_numpy() * 2 + mean.to_numpy()).argmax(1)
    out = pd.DataFrame(
        {
            "case": mean.index,
            "n_images": key.value_counts().reindex(mean.index).to_numpy(),
            "predicted": [classes[i] for i in winner],
        }
    )
    out = pd.concat([out, mean.reset_index(drop=True), counts.reset_index(drop=True)], axis=1)
    if labels is not None:
        truth = pd.Series(np.asarray(labels).astype(str))
        out["label"] = truth.groupby(key).agg(lambda s: s.value_counts().index[0]).to_numpy()
        correct = pd.Series(np.asarray(classes)[tile_pred] == truth.to_numpy())
        out["share_correct"] = correct.groupby(key).mean().to_numpy()
    return out


def case_metrics(
    cases: pd.DataFrame, classes: Sequence[str], *, resamples: int = 1000, seed: int = 0
) -> dict:
    """Recognition rate, case accuracy and macro recall, with 95% bootstrap CIs over cases.

    Args:
        cases: :func:`aggregate_cases`'s table, with labels.
        classes: the class names.
        resamples: bootstrap resamples (of cases).
        seed: their seed.
    """
    n = len(cases)
    w = np.vstack([np.ones(n), bootstrap_weights(n, resamples, seed)])  # row 0: the point
    share = cases["share_correct"].to_numpy(float)
    right = (cases["predicted"] == cases["label"]).to_numpy(float)
    onehot = np.stack([(cases["label"] == c).to_numpy(float) for c in classes], 1)  # (N, C)
    support = w @ onehot  # (R, C)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, (w @ (onehot * right[:, None])) / support, np.nan)
        values = {
            "recognition_rate": (w @ share) / w.sum(1),
            "accuracy": (w @ right) / w.sum(1),
            "macro_recall": np.nanmean(recall, 1),
        }
    out = {k: float(v[0]) for k, v in values.items()}
    out["ci"] = {
        k: [float(x) for x in np.nanpercentile(v[1:], [2.5, 97.5])] for k, v in values.items()
    }
    out["n"] = n
    out["per_class_recall"] = {
        c: (float(recall[0, i]) if np.isfinite(recall[0, i]) else None)
        for i, c in enumerate(classes)
    }
    return out


def case_results(folder: Path, table: pd.DataFrame, probs: np.ndarray, classes, p) -> dict:
    """Patient/slide-level results of the test split, per ``p.case_columns`` column present.

    Writes ``cases_<column>.csv`` (one row per case) into ``folder``.

    Args:
        folder: where the case tables go.
        table: the test rows (``label`` and the case columns).
        probs: (N, C) calibrated probabilities of those rows.
        classes: the class names.
        p: the ``evaluate`` params (``case_columns``, ``case_method``, ``bootstrap``, ``seed``).

    Returns:
        ``{column: case_metrics(...) | {"method": p.case_method}}``.
    """
    out = {}
    for column in (c for c in p.case_columns if c in table):
        cases = aggregate_cases(
            table[column], probs, classes, labels=table["label"], method=p.case_method
        )
        out[column] = case_metrics(cases, classes, resamples=p.bootstrap, seed=p.seed) | {
            "method": p.case_method
        }
        with atomic_path(Path(folder) / f"cases_{column}.csv") as tmp:
            cases.to_csv(tmp, index=False)
    return out
