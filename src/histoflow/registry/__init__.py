"""Model registry: MLflow tracking, registration and gated promotion."""

from histoflow.registry.mlflow_registry import (
    Decision,
    configure_tracking,
    git_commit,
    load_model,
    log_and_register,
    log_monitoring,
    promote,
    tracking_uri,
)

__all__ = [
    "Decision",
    "configure_tracking",
    "git_commit",
    "load_model",
    "log_and_register",
    "log_monitoring",
    "promote",
    "tracking_uri",
]
