"""What the data contract found: one :class:`Violation` per failed expectation, and the result.

A violation belongs to one of :data:`CHECKS` (the fields of
:class:`~histoflow.config.ValidateChecks`) or to :data:`SCHEMA`, the expectations that always
run as errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from histoflow.config import ValidateChecks

__all__ = ["CHECKS", "SCHEMA", "ContractResult", "Violation", "json_ready"]

CHECKS: tuple[str, ...] = tuple(ValidateChecks.model_fields)
SCHEMA = "schema"


@dataclass(frozen=True)
class Violation:
    """One failed expectation.

    Attributes:
        check: The :class:`~histoflow.config.ValidateChecks` field it belongs to, or
            ``"schema"``.
        level: ``"error"`` or ``"warning"``.
        expectation: GX expectation type, e.g. ``"expect_column_values_to_be_in_set"``.
        column: Column the expectation ran on (a derived ``_``-column for rules across rows).
        message: What was expected and what was found, as a sentence.
        paths: Every offending file, in table order (empty for table-level rules).
    """

    check: str
    level: str
    expectation: str
    column: str
    message: str
    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContractResult:
    """Outcome of :func:`~histoflow.data.quality.contract.check_contract`.

    Attributes:
        violations: One entry per failed expectation, errors and warnings alike.
        statistics: GX counts over all expectations run: ``evaluated_expectations``,
            ``successful_expectations``, ``unsuccessful_expectations``, ``success_percent``.
        expectations: GX's result per expectation, without the row lists: ``check``,
            ``level``, ``expectation``, ``column``, ``success`` and ``result`` (counts and
            ``observed_value``).
    """

    violations: tuple[Violation, ...]
    statistics: dict = field(default_factory=dict)
    expectations: tuple[dict, ...] = ()

    @property
    def errors(self) -> tuple[Violation, ...]:
        """Violations at level ``error``."""
        return tuple(v for v in self.violations if v.level == "error")

    @property
    def warnings(self) -> tuple[Violation, ...]:
        """Violations at level ``warning``."""
        return tuple(v for v in self.violations if v.level == "warning")

    @property
    def success(self) -> bool:
        """True when no check at level ``error`` failed; warnings do not fail the contract."""
        return not self.errors

    def flagged(self, checks: Iterable[str]) -> set[str]:
        """Paths named by the violations of ``checks``, e.g. ``["blurred", "blank"]``.

        Raises:
            ValueError: for a name that is not a check.
        """
        checks = set(checks)
        unknown = checks - {*CHECKS, SCHEMA}
        if unknown:
            raise ValueError(f"unknown check(s) {sorted(unknown)}; checks are {list(CHECKS)}")
        return {p for v in self.violations if v.check in checks for p in v.paths}

    def to_dict(self) -> dict:
        """Return a JSON-ready dict: success, counts, violations and GX's per-expectation results."""
        return {
            "success": self.success,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "statistics": json_ready(self.statistics),
            "violations": [
                {
                    "check": v.check,
                    "level": v.level,
                    "expectation": v.expectation,
                    "column": v.column,
                    "message": v.message,
                    "paths": list(v.paths),
                }
                for v in self.violations
            ],
            "expectations": [dict(e) for e in self.expectations],
        }

    def summary(self, max_paths: int = 10) -> str:
        """Describe the result for a log or a terminal: errors first, then warnings.

        Args:
            max_paths: Files listed per violation; the rest are counted.

        Returns:
            Multi-line text: a status line, then each violation and its first files.
        """
        evaluated = self.statistics.get("evaluated_expectations", 0)
        counts = f"{_plural(len(self.errors), 'error')}, {_plural(len(self.warnings), 'warning')}"
        if self.success:
            head = "Data contract passed" + (f" with {counts}" if self.warnings else "")
        else:
            head = f"Data contract FAILED: {counts}"
        lines = [f"{head} ({evaluated} expectations)."]
        for v in (*self.errors, *self.warnings):
            files = f" ({_plural(len(v.paths), 'file')})" if v.paths else ""
            lines.append(f"- {v.level.upper()} [{v.check}] {v.message}{files}")
            lines.extend(f"    {p}" for p in v.paths[:max_paths])
            if len(v.paths) > max_paths:
                lines.append(f"    ... and {len(v.paths) - max_paths} more")
        return "\n".join(lines)


def json_ready(value: Any) -> Any:
    """``value`` with numpy scalars as Python ones and unknown objects as text, recursively.

    GX results hold numpy scalars and the odd custom object; JSON wants plain values.
    """
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
