"""Model registry: MLflow tracking, registration, gated promotion, rollback and the model card."""

from histoflow.registry.mlflow_registry import (
    CHALLENGER,
    CHAMPION,
    RegistryUnavailable,
    configure_tracking,
    git_commit,
    load_model,
    log_and_register,
    log_monitoring,
    registered_version_with,
    tracking_uri,
)
from histoflow.registry.model_card import render_model_card
from histoflow.registry.promotion import (
    Decision,
    Evidence,
    PromotionLockTimeout,
    decide,
    promote,
    promote_by_hand,
    rollback,
    status,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "Decision",
    "Evidence",
    "PromotionLockTimeout",
    "RegistryUnavailable",
    "configure_tracking",
    "decide",
    "git_commit",
    "load_model",
    "log_and_register",
    "log_monitoring",
    "promote",
    "promote_by_hand",
    "registered_version_with",
    "render_model_card",
    "rollback",
    "status",
    "tracking_uri",
]
