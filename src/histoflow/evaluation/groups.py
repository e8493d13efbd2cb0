"""Metrics per group (magnification, site, modality, patient) and the cross-group protocol's scores.

The cross-group protocol is the BreakHis experiment: train a fusion head on one group's
training images (e.g. 40x) and test it on every group's test images (100x, 200x, 400x, and 40x
itself as the in-domain reference). The head is trained by ``evaluate`` with
:func:`histoflow.training.fusion.fit_on_group`; this module picks the group and scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from histoflow.config import CrossGroupConfig
from histoflow.metrics import BootstrapWeights, bootstrap_ci, headline_metrics

__all__ = ["GROUP_METRICS", "cross_group_home", "cross_group_scores", "group_breakdowns"]

GROUP_METRICS = ("accuracy", "balanced_accuracy", "macro_recall", "macro_f1", "auroc", "ece")


def group_breakdowns(
    table: pd.DataFrame,
    y_true: np.ndarray,
    probs: np.ndarray,
    columns: Sequence[str],
    *,
    bins: int = 15,
) -> dict[str, dict[str, dict]]:
    """{column: {value: {n, accuracy, ..., ece}}} for each of ``columns`` found in ``table``."""
    out = {}
    for column in columns:
        if column not in table:
            continue
        values = table[column].astype("string")
        groups = sorted(values.dropna().unique())
        # One weight row per group (1 on its members): all groups in one pass.
        member = np.stack([(values == g).fillna(False).to_numpy(float) for g in groups])
        stats = headline_metrics(y_true, probs, member, bins=bins)
        out[column] = {
            str(g): {"n": int(member[i].sum())} | {m: float(stats[m][i]) for m in GROUP_METRICS}
            for i, g in enumerate(groups)
        }
    return out


def cross_group_home(spec: CrossGroupConfig, index: pd.DataFrame) -> np.ndarray | str:
    """The rows of the group the cross-group head trains on, or why the protocol is skipped.

    Returns:
        (N,) bool over ``index``'s rows, or a sentence (the manifest has no such column).

    Raises:
        ValueError: when ``train_on`` is not a value of the column, naming the values there are.
    """
    if spec.column not in index:
        return f"the manifest has no column {spec.column!r}"
    values = index[spec.column].astype("string")
    present = sorted(values.dropna().unique())
    if spec.train_on not in present:
        raise ValueError(
            f"evaluate.cross_group.train_on = {spec.train_on!r} is not a value of manifest column "
            f"{spec.column!r}; values there: {', '.join(present)}"
        )
    return (values == spec.train_on).fillna(False).to_numpy()


def cross_group_scores(
    values: pd.Series,
    y_true: np.ndarray,
    probs: np.ndarray,
    train_on: str,
    *,
    resamples: int,
    seed: int,
    bins: int = 15,
) -> dict[str, dict]:
    """Each group's test metrics for the head trained on ``train_on``.

    Args:
        values: (N,) each test row's group.
        y_true: (N,) class indices.
        probs: (N, C) the cross-group head's probabilities.
        train_on: the group it trained on (marked ``in_domain``).
        resamples: bootstrap resamples for the macro recall CI.
        seed: of the resamples.
        bins: confidence bins of the calibration error.

    Returns:
        {group: {n, in_domain, the :data:`GROUP_METRICS`, ci: {macro_recall: [low, high]}}}.
    """
    values = values.astype("string").reset_index(drop=True)
    groups = {}
    for g in sorted(values.dropna().unique()):
        m = (values == g).fillna(False).to_numpy()
        stats = {
            k: float(v[0]) for k, v in headline_metrics(y_true[m], probs[m], bins=bins).items()
        }
        ci = bootstrap_ci(y_true[m], probs[m], BootstrapWeights(int(m.sum()), resamples, seed))
        groups[str(g)] = {
            "n": int(m.sum()),
            "in_domain": g == train_on,
            **{k: stats[k] for k in GROUP_METRICS},
            "ci": {"macro_recall": ci["macro_recall"]},
        }
    return groups
