"""Metrics per group (magnification, site, modality, patient) and the cross-group protocol.

The cross-group protocol is the BreakHis experiment: train a fusion head on one group's
training images (e.g. 40x) and test it on every group's test images (100x, 200x, 400x, and 40x
itself as the in-domain reference).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from histoflow.config import CrossGroupConfig, TrainFusionConfig
from histoflow.inference import fuse
from histoflow.metrics import bootstrap_ci, bootstrap_weights, headline_metrics
from histoflow.models.ablations import create_classifier
from histoflow.models.fit import feature_dataset, fit_classifier
from histoflow.models.fusion import FusionConfig

__all__ = ["GROUP_METRICS", "cross_group", "group_breakdowns"]

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


def cross_group(
    spec: CrossGroupConfig,
    tensors: dict[str, torch.Tensor],
    index: pd.DataFrame,
    y: torch.Tensor,
    net_cfg: FusionConfig,
    train_cfg: TrainFusionConfig,
    *,
    resamples: int,
    seed: int,
    bins: int = 15,
) -> dict:
    """Train on ``spec.train_on``'s train/val rows; score every group's test rows.

    Returns:
        ``column``, ``train_on``, ``n_train`` and ``groups`` {value: {n, in_domain, metrics...,
        ci: {macro_recall: [low, high]}}}; or ``column`` and ``skipped`` (the reason) when the
        manifest has no such column.

    Raises:
        ValueError: when ``train_on`` is not a value of the column, naming the values there are.
    """
    if spec.column not in index:
        return {"column": spec.column, "skipped": f"the manifest has no column {spec.column!r}"}
    values = index[spec.column].astype("string")
    present = sorted(values.dropna().unique())
    if spec.train_on not in present:
        raise ValueError(
            f"evaluate.cross_group.train_on = {spec.train_on!r} is not a value of manifest column "
            f"{spec.column!r}; values there: {', '.join(present)}"
        )
    home = (values == spec.train_on).fillna(False).to_numpy()
    split = index["split"].to_numpy()
    train = feature_dataset(tensors, y, home & (split == "train"))
    val = feature_dataset(tensors, y, home & (split == "val"))
    net = fit_classifier(create_classifier("fusion", net_cfg), train, val, train_cfg).net
    test = split == "test"
    rows = torch.from_numpy(test)
    probs, _ = fuse(
        net, tensors["image_tokens"][rows], tensors["text_tokens"][rows], tensors["text_mask"][rows]
    )
    y_test = y[rows].numpy()
    test_values = values[test].reset_index(drop=True)
    groups = {}
    for g in sorted(test_values.dropna().unique()):
        m = (test_values == g).fillna(False).to_numpy()
        stats = {
            k: float(v[0]) for k, v in headline_metrics(y_test[m], probs[m], bins=bins).items()
        }
        ci = bootstrap_ci(y_test[m], probs[m], bootstrap_weights(int(m.sum()), resamples, seed))
        groups[str(g)] = {
            "n": int(m.sum()),
            "in_domain": g == spec.train_on,
            **{k: stats[k] for k in GROUP_METRICS},
            "ci": {"macro_recall": ci["macro_recall"]},
        }
    return {
        "column": spec.column,
        "train_on": spec.train_on,
        "n_train": len(train),
        "groups": groups,
    }
