"""Model registry: the one adapter to MLflow.

Tracking set-up and retries (:mod:`.tracking`), run logging and registration
(:mod:`.mlflow_registry`), registering a finished pipeline run (:mod:`.registration`), gated
promotion and rollback (:mod:`.promotion`), the model card and the pyfunc model.
"""

from histoflow.registry.mlflow_registry import (
    CHALLENGER,
    CHAMPION,
    RegisteredModel,
    load_model,
    log_and_register,
    log_monitoring,
    registered_version_with,
)
from histoflow.registry.model_card import render_model_card
from histoflow.registry.promotion import (
    PromotionLockTimeout,
    promote,
    promote_by_hand,
    rollback,
    status,
)
from histoflow.registry.registration import Registration, TrainingRun, register_run
from histoflow.registry.rules import Decision, Evidence, decide
from histoflow.registry.tracking import (
    RegistryUnavailable,
    configure_tracking,
    evaluation_metrics,
    git_commit,
    tracking_uri,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "Decision",
    "Evidence",
    "PromotionLockTimeout",
    "RegisteredModel",
    "Registration",
    "RegistryUnavailable",
    "TrainingRun",
    "configure_tracking",
    "decide",
    "evaluation_metrics",
    "git_commit",
    "load_model",
    "log_and_register",
    "log_monitoring",
    "promote",
    "promote_by_hand",
    "register_run",
    "registered_version_with",
    "render_model_card",
    "rollback",
    "status",
    "tracking_uri",
]
