"""The registered model: one MLflow pyfunc over the whole inference path.

Input: a DataFrame with an ``image`` column of base64-encoded image files (PNG, JPEG, TIFF...).
Output: ``label``, ``confidence``, ``uncertainty``, ``prob_<class>``, ``caption``,
``prediction_set`` and ``set_size`` per row.

The model is logged as code (:data:`MODEL_CODE`, which calls ``mlflow.models.set_model``), not
pickled: loading it needs the ``histoflow`` package and the logged artifacts (the ``encoder`` and
``fusion`` model folders, and the monitoring ``reference``), nothing else of the training run.
"""

from __future__ import annotations

import base64
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from typing_extensions import override

from histoflow.data.images import ImageTooLarge, decode_rgb

__all__ = ["MODEL_CODE", "HistoflowModel", "encode_image_file", "model_signature"]

# The file MLflow stores with the model and runs at load time (models-from-code).
MODEL_CODE = Path(__file__).with_name("_model_code.py")


def encode_image_file(path: str | Path) -> str:
    """Base64 text of an image file's bytes, the model's input format."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def model_signature(classes: list[str]) -> ModelSignature:
    """The pyfunc's signature, built from the class list (no model run needed)."""
    outputs = [
        ColSpec("string", "label"),
        ColSpec("double", "confidence"),
        ColSpec("double", "uncertainty"),
        *(ColSpec("double", f"prob_{c}") for c in classes),
        ColSpec("string", "caption"),
        # The conformal set (class names joined by "|") and its size (#14).
        ColSpec("string", "prediction_set"),
        ColSpec("long", "set_size"),
    ]
    return ModelSignature(inputs=Schema([ColSpec("string", "image")]), outputs=Schema(outputs))


class HistoflowModel(mlflow.pyfunc.PythonModel):
    """Wraps :class:`histoflow.inference.Predictor`; artifacts ``encoder`` and ``fusion`` are model folders."""

    @override
    def load_context(self, context) -> None:
        from histoflow.inference import Predictor

        self.predictor = Predictor.from_folders(
            Path(context.artifacts["encoder"]), Path(context.artifacts["fusion"])
        )
        # What monitoring compares new batches with; models registered before it have none.
        self.reference = {
            k: Path(v) for k, v in context.artifacts.items() if k.startswith("reference")
        }

    @override
    def predict(
        self, context, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        # Bad input is the caller's to fix: MLflow's invalid-parameter error (HTTP 400 when
        # served), naming the row and what is wrong with it.
        if "image" not in model_input:
            raise MlflowException.invalid_parameter_value(
                "input needs a column 'image' with base64-encoded image files"
            )
        images, limit = [], self.predictor.embedder.max_pixels
        for i, data in enumerate(model_input["image"]):
            try:
                raw = data if isinstance(data, bytes) else base64.b64decode(data, validate=True)
            except (TypeError, ValueError) as exc:
                raise MlflowException.invalid_parameter_value(
                    f"row {i}: 'image' is not base64 ({exc})"
                ) from None
            try:
                # The header's pixel count is checked before decoding (decompression bombs).
                images.append(decode_rgb(raw, max_pixels=limit, name=f"row {i}"))
            except ImageTooLarge as exc:
                raise MlflowException.invalid_parameter_value(str(exc)) from None
            except (OSError, ValueError) as exc:
                raise MlflowException.invalid_parameter_value(
                    f"row {i}: not an image histoflow can read ({type(exc).__name__}: {exc})"
                ) from None
        return self.predictor.predict(images)
