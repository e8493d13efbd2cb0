"""Training curves to MLflow: Lightning's own MLflow logger, when a tracking server is set.

Lightning's adapter, not histoflow's registry: the curves of a run are evidence, registering
models stays with :mod:`histoflow.registry`.
"""

from __future__ import annotations

import os

from lightning.pytorch.loggers import MLFlowLogger

__all__ = ["create_training_logger"]


def create_training_logger(run_name: str, params: dict) -> MLFlowLogger | None:
    """A Lightning ``MLFlowLogger`` for ``MLFLOW_TRACKING_URI``, or None when it is not set.

    The run goes to the experiment ``MLFLOW_EXPERIMENT_NAME`` (default ``histoflow``), named
    ``run_name``, with ``params`` logged; Lightning then logs every metric the module logs
    (per epoch) and the learning rate, and closes the run when training ends.
    """
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    logger = MLFlowLogger(
        experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME", "histoflow"),
        run_name=run_name,
        tracking_uri=os.environ["MLFLOW_TRACKING_URI"],
        log_model=False,
    )
    logger.log_hyperparams(params)
    return logger
