"""Grouped k-fold cross-validation of the fusion head on the cached embeddings.

One test split gives one number; with few patients it moves a lot with which patients landed in
it. Here every row is tested once: the rows are cut into ``folds`` folds that never split a
group (patient, or inferred case) and keep the class mix (StratifiedGroupKFold); for fold i the
head trains on the other folds but the next one, stops early on that next fold, and is scored on
fold i. The result is each headline metric's mean and std over folds. Cheap: only the head
trains, on features computed once.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedGroupKFold

from histoflow.config import TrainFusionConfig
from histoflow.evaluation.scoring import score_rows
from histoflow.metrics import HEADLINE, headline_metrics
from histoflow.models.ablations import create_classifier
from histoflow.models.fusion import FusionConfig
from histoflow.training.fusion import FeatureRows, fit_classifier

__all__ = ["fusion_grouped_cv"]


def fusion_grouped_cv(
    tensors,
    index: pd.DataFrame,
    classes: list[str],
    net_cfg: FusionConfig,
    p: TrainFusionConfig,
    groups: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    batch_size: int = 256,
    bins: int = 15,
) -> dict:
    """Train and score the deployed fusion recipe once per fold, folds grouped by ``groups``.

    Args:
        tensors: the feature store (:class:`~histoflow.embeddings.store.FeatureStore`), read
            a batch at a time.
        index: the feature store's index (``label`` per row); every row takes part.
        classes: class names in label-index order.
        net_cfg: the deployed network's configuration.
        p: the deployed training recipe.
        groups: (N,) group of each row; a group never sits in two folds.
        folds: number of folds (at least 3: test, validation and training folds).
        seed: fold assignment.
        batch_size: rows per scoring batch.
        bins: confidence bins of the calibration error.

    Returns:
        ``{"folds", "groups", metric: {"mean", "std", "values"}}`` for every headline metric.

    Raises:
        ValueError: fewer than 3 folds, or fewer groups than folds.
    """
    n_groups = len(np.unique(groups))
    if folds < 3 or n_groups < folds:
        raise ValueError(
            f"grouped cross-validation of the fusion head needs at least 3 folds and a group per "
            f"fold; evaluate.cv_folds is {folds} and the data has {n_groups} groups"
        )
    y = torch.tensor([classes.index(c) for c in index["label"]])
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    for f, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y.numpy(), groups)):
        fold_of[test] = f
    build = partial(create_classifier, "fusion", net_cfg)
    values: dict[str, list[float]] = {m: [] for m in HEADLINE}
    for f in range(folds):
        test, val = fold_of == f, fold_of == (f + 1) % folds
        train = FeatureRows(tensors, y, ~test & ~val)
        net = fit_classifier(build, train, FeatureRows(tensors, y, val), p).net
        probs, _ = score_rows(net, tensors, test, batch_size)
        scores = headline_metrics(y[torch.from_numpy(test)].numpy(), probs, bins=bins)
        for m in HEADLINE:
            values[m].append(float(scores[m][0]))
    return {"folds": folds, "groups": n_groups} | {
        m: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)), "values": v}
        for m, v in values.items()
    }
