"""The spread over seeds: the fusion head retrained with each seed, scored on the test split.

On one CPU the pipeline is deterministic, so a seed's metrics are exact; what the seeds do not
pin is everything a seed stands for: initial weights, dropout, batch order, and on another
machine the bf16 kernels. Their spread is the noise of one training run, the margin a
promotion must beat (``registry.noise_factor``), reported beside the bootstrap CI (which is the
noise of the test sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import pandas as pd
import torch

from histoflow.config import TrainFusionConfig
from histoflow.evaluation.scoring import score_rows
from histoflow.metrics import HEADLINE, headline_metrics
from histoflow.models.ablations import create_classifier
from histoflow.models.fusion import FusionConfig
from histoflow.training.calibrate import calibrate, calibration_rows
from histoflow.training.fusion import FeatureRows, fit_classifier

__all__ = ["seed_spread"]


def seed_spread(
    store,
    index: pd.DataFrame,
    classes: list[str],
    net_cfg: FusionConfig,
    p: TrainFusionConfig,
    seeds: Sequence[int],
    *,
    batch_size: int = 256,
    bins: int = 15,
) -> dict:
    """Train the deployed fusion configuration once per seed; the test metrics' mean and std.

    Args:
        store: the feature store (:class:`~histoflow.embeddings.store.FeatureStore`).
        index: the feature store's index (``label``, ``split`` per row).
        classes: class names in label-index order.
        net_cfg: the deployed network's configuration.
        p: the deployed training recipe; only its seed changes.
        seeds: at least two seeds.
        batch_size: rows per scoring batch.
        bins: confidence bins of the calibration error.

    Returns:
        ``{"seeds": [...], metric: {"mean", "std", "values"}}`` for every headline metric;
        ``std`` is the sample standard deviation (ddof 1).
    """
    y = torch.tensor([classes.index(c) for c in index["label"]])
    split = index["split"].to_numpy()
    train = FeatureRows(store, y, split == "train")
    # The deployed recipe's rows: the val patients held out for the conformal sets never stop
    # training; the temperature is fitted on the rest, as train_fusion does.
    conformal = calibration_rows(index, p.calibration_share, p.seed)
    early_stop = (split == "val") & ~conformal
    val = FeatureRows(store, y, early_stop)
    test = split == "test"
    build = partial(create_classifier, "fusion", net_cfg)
    values: dict[str, list[float]] = {m: [] for m in HEADLINE}
    for s in seeds:
        net = fit_classifier(build, train, val, p.model_copy(update={"seed": s})).net
        calibration, _ = calibrate(net, store, y, early_stop, conformal, p.alpha)
        probs, _ = score_rows(net, store, test, batch_size, calibration.temperature)
        scores = headline_metrics(y[torch.from_numpy(test)].numpy(), probs, bins=bins)
        for m in HEADLINE:
            values[m].append(float(scores[m][0]))
    return {"seeds": list(seeds)} | {
        m: {
            "mean": float(np.mean(v)),
            "std": float(np.std(v, ddof=1)),
            "values": v,
        }
        for m, v in values.items()
    }
