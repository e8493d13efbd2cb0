"""One monitored batch: streamed through the champion, failures set aside, the rest aligned."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from histoflow.inference import Predictor
from histoflow.monitoring.batch import champion_outputs, set_aside_failures
from histoflow.monitoring.reference import load_reference
from histoflow.stages import evaluate, reference, train_encoder, train_fusion


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


def test_the_batch_is_streamed_into_the_references_components(trained_project, tiny_data, tmp_path):
    # What monitoring keeps per file is k components, projected batch by batch: the same
    # numbers as projecting every pooled embedding at once, and NaN where a file failed.
    root = trained_project
    predictor = Predictor.from_folders(
        root / train_encoder.Outputs().model, root / train_fusion.Outputs().model, accelerator="cpu"
    )
    ref = load_reference(
        root / reference.Outputs().reference, root / evaluate.Outputs().predictions
    )
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    files = [*sorted(tiny_data.rglob("*.png"))[:9], broken, *sorted(tiny_data.rglob("*.png"))[9:12]]

    table, components = champion_outputs(predictor, files, ref, batch_size=4)  # 4 batches

    whole, pooled = predictor.predict_files(files, embeddings=True)
    pd.testing.assert_frame_equal(table, whole)
    assert components.shape == (len(files), ref.components.shape[0])
    assert np.isnan(components[9]).all() and not np.isnan(np.delete(components, 9, 0)).any()
    expected = ref.project(np.delete(pooled, 9, 0)).to_numpy()
    np.testing.assert_allclose(np.delete(components, 9, 0), expected, rtol=1e-5, atol=1e-5)
