"""The conformal prediction sets of a batch, as a monitoring signal.

Sets are calibrated on images like the training data; on images unlike it the model is less
sure of more classes and the sets widen. The mean set size per batch, beside the reference's
(the champion's test split), is therefore a drift signal that needs no labels; with labels the
batch's coverage says whether the sets still keep their 1 - alpha promise there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["SETS", "SET_SIZE", "prediction_set_signal"]

SET_SIZE, SETS = "set_size", "prediction_set"
_SEPARATOR = "|"


def prediction_set_signal(
    reference: pd.DataFrame, current: pd.DataFrame, labels: pd.Series | None, classes: list[str]
) -> dict | None:
    """Mean set size of the batch and of the reference; coverage where labels are known.

    Args:
        reference: the reference predictions (a ``set_size`` column where the model has sets).
        current: the batch's predictions (``set_size`` and ``prediction_set``).
        labels: true class per batch row, or None.
        classes: the model's classes.

    Returns:
        None when the batch has no sets (a model without conformal calibration); else
        ``{mean_set_size, reference_mean_set_size, ratio, singleton_share, empty_share,
        coverage, coverage_by_class, n_labelled}`` (coverage entries None without labels).
    """
    if SET_SIZE not in current or current[SET_SIZE].isna().all():
        return None
    size = current[SET_SIZE].astype(float)
    ref = reference[SET_SIZE].astype(float).mean() if SET_SIZE in reference else np.nan
    out = {
        "mean_set_size": float(size.mean()),
        "reference_mean_set_size": float(ref) if np.isfinite(ref) else None,
        "ratio": float(size.mean() / ref) if np.isfinite(ref) and ref > 0 else None,
        "singleton_share": float((size == 1).mean()),
        "empty_share": float((size == 0).mean()),
        "coverage": None,
        "coverage_by_class": None,
        "n_labelled": 0,
    }
    if labels is not None and SETS in current:
        known = labels.notna().to_numpy() & labels.isin(classes).to_numpy()
        if known.any():
            sets = current[SETS].fillna("").astype(str).to_numpy()[known]
            truth = labels.to_numpy()[known]
            covered = np.array([t in s.split(_SEPARATOR) for s, t in zip(sets, truth, strict=True)])
            out["coverage"] = float(covered.mean())
            out["coverage_by_class"] = {
                c: float(covered[truth == c].mean()) for c in classes if (truth == c).any()
            }
            out["n_labelled"] = int(known.sum())
    return out
