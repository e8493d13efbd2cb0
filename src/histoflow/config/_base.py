"""What every params section shares: frozen models, unknown keys rejected."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["ConfigError", "Section"]


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the key and what is allowed."""


class Section(BaseModel):
    """A params.yaml section: frozen, and an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)
