"""One monitored batch: files the champion could not decode are set aside, the rest stay aligned."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from histoflow.monitoring.batch import set_aside_failures


def test_files_the_champion_cannot_decode_are_set_aside_with_their_error(tmp_path):
    features = pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "readable": True, "error": ""})
    predictions = pd.DataFrame(
        {"path": ["a.png", "b.png", "c.png"], "label": ["x", None, "y"]}
    ).assign(error=["", "cannot read b.png as an image: too many pixels", ""])
    pooled = np.array([[1.0], [np.nan], [3.0]])

    features, kept, emb = set_aside_failures(tmp_path, features, predictions, pooled)

    assert features["readable"].tolist() == [True, False, True]
    assert "too many pixels" in features.loc[1, "error"]
    assert kept["path"].tolist() == ["a.png", "c.png"] and "error" not in kept
    assert emb.tolist() == [[1.0], [3.0]]
    with pytest.raises(ValueError, match="none of the 1 readable files"):
        set_aside_failures(tmp_path, features, predictions.iloc[[1]], pooled[[1]])
