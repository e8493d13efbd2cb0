"""Leave-one-group-out: for each site (scanner, magnification), a head that never saw it.

The robustness certificate's test of a real shift: for each value of a manifest column, a fusion
head with the deployed configuration is trained on the other groups' train/val rows only
(:func:`histoflow.training.fusion.fit_on_group`, the cross-group machinery) and scored on the
held-out group's test rows. Its drop is measured against the deployed model (which trained on
every group) on the same rows. Cheap: the heads train on the cached embeddings.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import torch

from histoflow.config import TrainFusionConfig
from histoflow.evaluation.scoring import score_rows
from histoflow.metrics import bootstrap_ci, bootstrap_weights, headline_metrics
from histoflow.models.ablations import create_classifier
from histoflow.models.fusion import FusionConfig
from histoflow.training.fusion import fit_on_group

__all__ = ["leave_one_group_out"]


def leave_one_group_out(
    tensors,
    index: pd.DataFrame,
    y: torch.Tensor,
    column: str,
    clean_probs: np.ndarray,
    net_cfg: FusionConfig,
    p: TrainFusionConfig,
    *,
    resamples: int,
    seed: int,
    batch_size: int = 256,
) -> dict:
    """Train without each group of ``column``; score on its test rows.

    Args:
        tensors: the feature store (:class:`~histoflow.embeddings.store.FeatureStore`), read
            a batch at a time.
        index: the feature store's index (``split`` and ``column`` per row).
        y: (N,) class indices of all rows.
        column: the manifest column whose groups are held out in turn.
        clean_probs: (T, C) the deployed model's probabilities on the test rows, in order.
        net_cfg: the deployed network's configuration.
        p: the deployed training recipe.
        resamples: bootstrap resamples of each group's macro recall CI.
        seed: of the resamples.
        batch_size: rows per scoring batch.

    Returns:
        ``{"column", "groups": {group: {n, n_train, macro_recall, ci, clean_macro_recall,
        drop}}}``, or ``{"column", "skipped": why}`` (no such column, or one group only).
    """
    if column not in index:
        return {"column": column, "skipped": f"the manifest has no column {column!r}"}
    values = index[column].astype("string")
    groups = sorted(values.dropna().unique())
    if len(groups) < 2:
        return {"column": column, "skipped": f"column {column!r} has fewer than two groups"}
    split = index["split"].to_numpy()
    test = split == "test"
    build = partial(create_classifier, "fusion", net_cfg)
    out = {}
    for g in groups:
        held = (values == g).fillna(False).to_numpy()
        rows = held & test
        others = ~held & values.notna().to_numpy()
        # Not judged: no rows held out, or nothing left to train on or to stop training on.
        if not rows.any() or not all((others & (split == s)).any() for s in ("train", "val")):
            continue
        net = fit_on_group(build, tensors, y, split, others, p).net
        probs, _ = score_rows(net, tensors, rows, batch_size)
        y_g = y[torch.from_numpy(rows)].numpy()
        value = float(headline_metrics(y_g, probs)["macro_recall"][0])
        clean = float(headline_metrics(y_g, clean_probs[rows[test]])["macro_recall"][0])
        weights = bootstrap_weights(len(y_g), resamples, seed)
        out[str(g)] = {
            "n": int(rows.sum()),
            "n_train": int((others & (split == "train")).sum()),
            "macro_recall": value,
            "ci": bootstrap_ci(y_g, probs, weights)["macro_recall"],
            "clean_macro_recall": clean,
            "drop": value - clean,
        }
    return {"column": column, "groups": out}
