"""Typed parameters: ``params.yaml`` read once, at the edge, into frozen pydantic models.

One model per section. Unknown keys and bad values fail before any work, with a message that
names the key and what is allowed.
"""

from __future__ import annotations

from histoflow.config._base import ConfigError
from histoflow.config.audit import AuditConfig
from histoflow.config.data import DataConfig, ValidateChecks, ValidateConfig
from histoflow.config.evaluation import (
    CrossGroupConfig,
    EvaluateConfig,
    ProbesConfig,
    ReferenceConfig,
    RegistryConfig,
    RobustnessConfig,
)
from histoflow.config.operations import DeployConfig, MonitorConfig
from histoflow.config.params import Params, load_params, parse_params
from histoflow.config.training import (
    AugmentConfig,
    CaptionsConfig,
    EmbedConfig,
    TrainEncoderConfig,
    TrainFusionConfig,
)

__all__ = [
    "AuditConfig",
    "AugmentConfig",
    "CaptionsConfig",
    "ConfigError",
    "CrossGroupConfig",
    "DataConfig",
    "DeployConfig",
    "EmbedConfig",
    "EvaluateConfig",
    "MonitorConfig",
    "Params",
    "ProbesConfig",
    "ReferenceConfig",
    "RegistryConfig",
    "RobustnessConfig",
    "TrainEncoderConfig",
    "TrainFusionConfig",
    "ValidateChecks",
    "ValidateConfig",
    "load_params",
    "parse_params",
]
