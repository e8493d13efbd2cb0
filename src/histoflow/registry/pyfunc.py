"""The registered model: one MLflow pyfunc over the whole inference path.

Input: a DataFrame with an ``image`` column of base64-encoded image files (PNG, JPEG, TIFF...).
Output: ``label``, ``confidence``, ``uncertainty``, ``prob_<class>`` and ``caption`` per row.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from PIL import Image

from histoflow.data.dataset import to_rgb

__all__ = ["HistoflowModel", "encode_image_file"]


def encode_image_file(path: str | Path) -> str:
    """Base64 text of an image file's bytes, the model's input format."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


class HistoflowModel(mlflow.pyfunc.PythonModel):
    """Wraps :class:`histoflow.inference.Predictor`; artifacts ``encoder`` and ``fusion`` are model folders."""

    def load_context(self, context) -> None:
        from histoflow.inference import Predictor

        self.predictor = Predictor.from_folders(
            Path(context.artifacts["encoder"]), Path(context.artifacts["fusion"])
        )
        # What monitoring compares new batches with; models registered before it have none.
        self.reference = {
            k: Path(v) for k, v in context.artifacts.items() if k.startswith("reference")
        }

    def predict(
        self, context, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        if "image" not in model_input:
            raise ValueError("input needs a column 'image' with base64-encoded image files")
        images = []
        for i, data in enumerate(model_input["image"]):
            try:
                with Image.open(io.BytesIO(base64.b64decode(data))) as img:
                    img.load()
                    images.append(to_rgb(img))
            except Exception as exc:
                raise ValueError(f"row {i}: not a decodable base64 image ({exc})") from None
        return self.predictor.predict(images)
