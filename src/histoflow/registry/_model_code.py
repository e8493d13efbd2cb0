"""Models-from-code entry point: MLflow copies this file into the model and runs it on load."""

import mlflow.models

from histoflow.registry.pyfunc import HistoflowModel

mlflow.models.set_model(HistoflowModel())
