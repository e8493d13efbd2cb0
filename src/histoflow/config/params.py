"""All of ``params.yaml``: reading it once, validating it, and saying what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from histoflow.config._base import ConfigError, Section
from histoflow.config.audit import AuditConfig
from histoflow.config.data import DataConfig, ValidateConfig
from histoflow.config.evaluation import EvaluateConfig, ReferenceConfig, RegistryConfig
from histoflow.config.operations import DeployConfig, MonitorConfig
from histoflow.config.training import (
    CaptionsConfig,
    EmbedConfig,
    TrainEncoderConfig,
    TrainFusionConfig,
)

__all__ = ["Params", "load_params", "parse_params"]


class Params(Section):
    """All of ``params.yaml``; every section is required so a typo'd section name fails."""

    data: DataConfig
    validate_: ValidateConfig = Field(alias="validate")
    captions: CaptionsConfig
    train_encoder: TrainEncoderConfig
    embed: EmbedConfig
    audit: AuditConfig = AuditConfig()
    train_fusion: TrainFusionConfig
    evaluate: EvaluateConfig
    reference: ReferenceConfig
    registry: RegistryConfig
    monitor: MonitorConfig
    deploy: DeployConfig

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def validate(self) -> ValidateConfig:  # type: ignore[override]
        """The ``validate`` section (``validate`` is a pydantic method name, hence the alias)."""
        return self.validate_


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a parsed params mapping.

    Args:
        raw: The mapping loaded from YAML.
        source: Name used in error messages.

    Raises:
        ConfigError: naming every bad key, with what is allowed.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, raw, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``.

    Raises:
        ConfigError: if the file is missing, is not YAML, or has an unknown key or bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: params file not found; run from the project root or pass --params"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(raw, str(path))


def _describe(exc: ValidationError, raw: dict, source: str) -> str:
    lines = [f"{source}: invalid parameters"]
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            lines.append(f"  {key}: unknown key; allowed keys here: {', '.join(allowed)}")
        elif err["type"] == "missing":
            lines.append(f"  {key}: required section or key is missing")
        else:
            value = _lookup(raw, loc)
            lines.append(f"  {key} = {value!r}: {err['msg']}")
    return "\n".join(lines)


def _allowed_keys(parent: list[str]) -> list[str]:
    model: type[BaseModel] = Params
    for part in parent:
        field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        if field is None or not isinstance(field.annotation, type):
            return []
        model = field.annotation
    return sorted(f.alias or name for name, f in model.model_fields.items())


def _lookup(raw: Any, loc: list[str]) -> Any:
    for part in loc:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        elif isinstance(raw, list | tuple) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        else:
            return None
    return raw
