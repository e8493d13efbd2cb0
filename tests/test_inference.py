"""The inference side knows the pixel limit: recorded with the model, enforced before decoding."""

from __future__ import annotations

import pandas as pd
import pytest

from histoflow.data.images import ImageTooLarge, load_rgb
from histoflow.inference import Predictor
from histoflow.models.checkpoint import read_model_json
from histoflow.registry.pyfunc import HistoflowModel, encode_image_file
from histoflow.stages import train_encoder, train_fusion


def test_the_model_refuses_a_bomb_with_the_limit_it_was_trained_with(
    trained_project, tiny_params, bomb_png, tiny_data
):
    encoder = trained_project / train_encoder.Outputs().model
    assert read_model_json(encoder)["max_pixels"] == tiny_params.data.max_pixels
    predictor = Predictor.from_folders(
        encoder, trained_project / train_fusion.Outputs().model, accelerator="cpu"
    )
    assert predictor.embedder.max_pixels == tiny_params.data.max_pixels
    # What Predictor.predict_files (histoflow predict, monitoring) opens each file with.
    with pytest.raises(ImageTooLarge, match=r"bomb.png: image is 12000 x 12000"):
        load_rgb(bomb_png, max_pixels=predictor.embedder.max_pixels)

    model = HistoflowModel()  # the registered pyfunc, as MLflow's scoring server runs it
    model.predictor = predictor
    tile = encode_image_file(next(tiny_data.rglob("*.png")))
    assert len(model.predict(None, pd.DataFrame({"image": [tile]}))) == 1
    bomb = pd.DataFrame({"image": [tile, encode_image_file(bomb_png)]})
    with pytest.raises(ImageTooLarge, match=r"^row 1: image is 12000 x 12000 = 144,000,000"):
        model.predict(None, bomb)
