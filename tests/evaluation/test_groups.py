"""Per-group metrics and the cross-group protocol's checks of its params."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from histoflow.config import CrossGroupConfig, TrainFusionConfig
from histoflow.evaluation.groups import cross_group, group_breakdowns
from histoflow.models.fusion import FusionConfig


def test_group_breakdowns_score_each_group_on_its_own_rows():
    table = pd.DataFrame({"site": ["a", "a", "b", "b"], "other": [1, 2, 3, 4]})
    y = np.array([0, 1, 0, 1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])  # site b: 1 of 2 right
    out = group_breakdowns(table, y, probs, ["site", "missing"])
    assert set(out) == {"site"}
    assert out["site"]["a"] == pytest.approx(
        {
            "n": 2,
            "accuracy": 1,
            "balanced_accuracy": 1,
            "macro_recall": 1,
            "macro_f1": 1,
            "auroc": 1,
            "ece": (0.1 + 0.2) / 2,
        }
    )
    assert out["site"]["b"]["accuracy"] == 0.5 and out["site"]["b"]["macro_recall"] == 0.5


def _cross(spec, index):
    n = len(index)
    tensors = {
        "image_tokens": torch.zeros(n, 4, 6),
        "text_tokens": torch.zeros(n, 3, 5),
        "text_mask": torch.ones(n, 3, dtype=torch.bool),
    }
    cfg = FusionConfig(6, 5, 4, 2, width=8, layers=1, heads=2, classifier_heads=2)
    return cross_group(
        spec,
        tensors,
        index,
        torch.zeros(n, dtype=torch.long),
        cfg,
        TrainFusionConfig(),
        resamples=10,
        seed=0,
    )


def test_cross_group_names_the_values_when_train_on_is_not_one():
    index = pd.DataFrame({"split": ["train", "test"], "magnification": ["20x", "40x"]})
    with pytest.raises(ValueError, match=r"train_on = '100x'.*values there: 20x, 40x"):
        _cross(CrossGroupConfig(column="magnification", train_on="100x"), index)


def test_cross_group_is_skipped_with_a_reason_when_the_column_is_absent():
    index = pd.DataFrame({"split": ["train", "test"]})
    out = _cross(CrossGroupConfig(column="modality", train_on="MR"), index)
    assert out == {"column": "modality", "skipped": "the manifest has no column 'modality'"}
