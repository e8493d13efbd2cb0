"""What every params section shares: frozen models, unknown keys rejected, numbers that are numbers."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

__all__ = ["ConfigError", "Section"]


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the key and what is allowed."""


class Section(BaseModel):
    """A params.yaml section: frozen, and an unknown key is an error.

    Numbers must be finite (``lr: .inf`` fails) and a YAML boolean is not a number
    (``epochs: true`` fails instead of training 1 epoch).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError(
                f"expected a number, got the boolean {value!r} (YAML reads true/false, yes/no "
                "and on/off as booleans)"
            )
        return value


def _numeric(annotation: Any) -> bool:
    """Whether a field holds a number and nothing a boolean could mean (``int | None``, ...)."""
    if annotation in (int, float):
        return True
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (
            bool(args)
            and all(_numeric(a) or _literal_of_str(a) for a in args)
            and any(_numeric(a) for a in args)
        )
    return False  # bool, str, Literal, Annotated (may convert booleans), containers, models


def _literal_of_str(annotation: Any) -> bool:
    return typing.get_origin(annotation) is Literal and all(
        isinstance(a, str) for a in typing.get_args(annotation)
    )
