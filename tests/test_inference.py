"""The inference side knows the pixel limit: recorded with the model, enforced before decoding."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

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
    # MLflow's invalid-parameter error: HTTP 400 from the scoring server, naming the row.
    with pytest.raises(MlflowException, match=r"^row 1: image is 12000 x 12000 = 144,000,000"):
        model.predict(None, bomb)

    # histoflow predict and monitoring: the bomb is one row with its reason, the rest classified.
    table, _ = predictor.predict_files([bomb_png, next(tiny_data.rglob("*.png"))], progress=False)
    assert table["error"].iloc[0].startswith(f"{bomb_png}: image is 12000 x 12000")
    assert table["error"].iloc[1] == "" and table["label"].notna().iloc[1]
