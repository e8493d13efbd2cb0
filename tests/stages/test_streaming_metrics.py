"""The streamed stages give the metrics the in-memory path gave, on the tiny project.

Before the feature store was read in batches, ``train_fusion`` and ``evaluate`` loaded every
tensor (``load_features``) and trained on in-memory rows (``feature_dataset``). That path is
rebuilt here from the same store and must reproduce the recorded metrics.
"""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch

from histoflow.config import load_params
from histoflow.data.manifest import class_names
from histoflow.embeddings.store import feature_dims, load_features
from histoflow.inference import fuse
from histoflow.metrics import headline_metrics
from histoflow.models.ablations import create_classifier
from histoflow.models.fusion import FusionConfig
from histoflow.training.calibrate import calibration_rows
from histoflow.training.fusion import feature_dataset, fit_classifier


def test_streamed_train_fusion_and_evaluate_match_the_in_memory_path(reproduced_project):
    cfg = load_params(reproduced_project / "params.yaml")
    recorded = json.loads((reproduced_project / "metrics/train_fusion.json").read_text())
    evaluated = json.loads((reproduced_project / "metrics/evaluate.json").read_text())
    tensors, _, index = load_features(reproduced_project / "outputs/embed")
    classes = class_names(index)
    y = torch.tensor([classes.index(c) for c in index["label"]])
    split = index["split"].to_numpy()
    net_cfg = FusionConfig.from_params(
        cfg.train_fusion, num_classes=len(classes), **feature_dims(tensors)
    )

    # The val rows that stop training: the rest of val calibrates the conformal sets (#14).
    early_stop = (split == "val") & ~calibration_rows(
        index, cfg.train_fusion.calibration_share, cfg.train_fusion.seed
    )
    result = fit_classifier(
        partial(create_classifier, "fusion", net_cfg),
        feature_dataset(tensors, y, split == "train"),
        feature_dataset(tensors, y, early_stop),
        cfg.train_fusion,
    )
    test = torch.from_numpy(split == "test")
    deployed = json.loads(
        (reproduced_project / "outputs/train_fusion/model/model.json").read_text()
    )
    probs, _ = fuse(
        result.net,
        tensors["image_tokens"][test],
        tensors["text_tokens"][test],
        tensors["text_mask"][test],
        temperature=deployed["calibration"]["temperature"],
    )

    assert result.best_val_macro_recall == pytest.approx(
        recorded["best_val_macro_recall"], abs=1e-9
    )
    assert result.epochs_run == recorded["epochs_run"]
    scores = headline_metrics(y[test].numpy(), probs)
    for metric, values in scores.items():
        assert float(values[0]) == pytest.approx(evaluated[metric], abs=1e-6), metric
    assert np.isfinite(probs).all()
