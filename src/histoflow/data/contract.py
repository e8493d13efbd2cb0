"""The data contract: a Great Expectations suite run on the per-image table.

One row per image (``path``, ``label``, ``split``, ``patient_id``, ``readable``, ``mode``,
``width``, ``height``, ``bytes``). The suite is built in code and run in an ephemeral GX
context, so nothing is written into the project. Every failed expectation becomes a
:class:`Violation` that names the offending files.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import great_expectations as gx
import pandas as pd
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.expectations.row_conditions import Column

__all__ = ["REQUIRED_COLUMNS", "SPLITS", "ContractResult", "Violation", "check_contract"]

SPLITS: tuple[str, ...] = ("train", "val", "test")
REQUIRED_COLUMNS: tuple[str, ...] = (
    "path",
    "label",
    "split",
    "patient_id",
    "readable",
    "mode",
    "width",
    "height",
    "bytes",
)

# Helper columns derived before validation; GX checks them like any other column.
_PATIENT_SPLITS = "_patient_n_splits"
_CLASS_COUNT = "_class_count"

# A message is fixed text, or built from the table and the offending row positions.
_Message = str | Callable[[pd.DataFrame, list[int], dict], str]


@dataclass(frozen=True)
class Violation:
    """One failed expectation.

    Attributes:
        expectation: GX expectation type, e.g. ``"expect_column_values_to_be_in_set"``.
        column: Column the expectation ran on (a derived ``_``-column for the patient and
            class-count rules).
        message: What was expected, as a sentence.
        paths: Every offending file, in table order (empty for table-level rules).
    """

    expectation: str
    column: str
    message: str
    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContractResult:
    """Outcome of :func:`check_contract`.

    Attributes:
        success: True when every expectation passed.
        violations: One entry per failed expectation.
        statistics: GX counts: ``evaluated_expectations``, ``successful_expectations``,
            ``unsuccessful_expectations``, ``success_percent``.
    """

    success: bool
    violations: tuple[Violation, ...]
    statistics: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Return a JSON-ready dict (paths as lists)."""
        return {
            "success": self.success,
            "statistics": dict(self.statistics),
            "violations": [
                {
                    "expectation": v.expectation,
                    "column": v.column,
                    "message": v.message,
                    "paths": list(v.paths),
                }
                for v in self.violations
            ],
        }

    def summary(self, max_paths: int = 10) -> str:
        """Describe the result for a log or a terminal.

        Args:
            max_paths: Files listed per violation; the rest are counted.

        Returns:
            Multi-line text: a status line, then each violation and its files.
        """
        evaluated = self.statistics.get("evaluated_expectations", 0)
        if self.success:
            return f"Data contract passed ({evaluated} expectations)."
        lines = [
            f"Data contract FAILED: {len(self.violations)} of {evaluated} expectations failed."
        ]
        for v in self.violations:
            n = len(v.paths)
            count = f" ({n} file{'s' if n != 1 else ''})" if n else ""
            lines.append(f"- {v.message}{count} [{v.expectation} on {v.column}]")
            lines.extend(f"    {p}" for p in v.paths[:max_paths])
            if len(v.paths) > max_paths:
                lines.append(f"    ... and {len(v.paths) - max_paths} more")
        return "\n".join(lines)


def check_contract(
    table: pd.DataFrame,
    *,
    classes: Sequence[str],
    allowed_modes: Sequence[str],
    min_size: int,
    max_size: int,
    min_per_class: int,
) -> ContractResult:
    """Validate the per-image table against the data contract.

    Rules: every file readable and non-empty; label in ``classes``; mode in ``allowed_modes``
    and width/height in ``[min_size, max_size]`` (readable files only); split in
    train/val/test; each patient in exactly one split; each class with at least
    ``min_per_class`` images; path present and unique.

    Args:
        table: One row per image; extra columns are ignored.
        classes: Allowed labels.
        allowed_modes: Allowed PIL modes, e.g. ``["RGB"]``.
        min_size: Smallest allowed width and height, in pixels.
        max_size: Largest allowed width and height, in pixels.
        min_per_class: Fewest images a class may have.

    Returns:
        The result, with one violation per failed rule.

    Raises:
        ValueError: If ``table`` lacks a required column.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"data contract: table is missing column(s) {missing}; "
            f"expected at least {list(REQUIRED_COLUMNS)}"
        )
    frame = _prepare(table, classes)
    rules = _rules(
        classes=list(classes),
        allowed_modes=list(allowed_modes),
        min_size=min_size,
        max_size=max_size,
        min_per_class=min_per_class,
    )
    with _quiet():
        validation = _validate(frame, rules)

    violations = []
    for res in validation.results:
        if res.success:
            continue
        config = res.expectation_config
        _, message = rules[config.meta["rule"]]
        rows = sorted(res.result.get("unexpected_index_list") or [])
        text = message if isinstance(message, str) else message(frame, rows, res.result)
        violations.append(
            Violation(
                expectation=config.type,
                column=config.kwargs.get("column", ""),
                message=text,
                paths=_paths(frame, rows),
            )
        )
    return ContractResult(
        success=bool(validation.success),
        violations=tuple(violations),
        statistics=dict(validation.statistics),
    )


def _prepare(table: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    # A fresh RangeIndex makes GX's unexpected_index_list row positions into ``frame``.
    frame = table.reset_index(drop=True)
    # GX map expectations skip nulls: a missing label, split or size must fail, not pass.
    frame["readable"] = frame["readable"].fillna(False).astype(bool)
    for column in ("label", "split", "mode"):
        frame[column] = frame[column].fillna("<missing>")
    for column in ("width", "height"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").fillna(-1)
    frame["bytes"] = pd.to_numeric(frame["bytes"], errors="coerce").fillna(0)

    frame[_PATIENT_SPLITS] = frame.groupby("patient_id")["split"].transform("nunique")
    # Only known classes are counted; an unknown label is the label rule's business.
    counts = frame.loc[frame["label"].isin(list(classes)), "label"].value_counts()
    frame[_CLASS_COUNT] = frame["label"].map(counts)
    return frame


def _rules(
    *,
    classes: list[str],
    allowed_modes: list[str],
    min_size: int,
    max_size: int,
    min_per_class: int,
) -> dict[str, tuple[gx.expectations.Expectation, _Message]]:
    exp = gx.expectations
    # `Column == True` builds a GX row condition (E712 is about plain Python comparisons).
    readable = Column("readable") == True  # noqa: E712
    size = f"between {min_size} and {max_size} px"
    rules: dict[str, tuple[gx.expectations.Expectation, _Message]] = {
        "path_not_null": (exp.ExpectColumnValuesToNotBeNull(column="path"), "path must be set"),
        "path_unique": (exp.ExpectColumnValuesToBeUnique(column="path"), "paths must be unique"),
        "readable": (
            exp.ExpectColumnValuesToBeInSet(column="readable", value_set=[True]),
            "file must open as an image (corrupt or unreadable file)",
        ),
        "not_empty": (
            exp.ExpectColumnValuesToBeBetween(column="bytes", min_value=1),
            "file must not be empty (0 bytes)",
        ),
        "label": (
            exp.ExpectColumnValuesToBeInSet(column="label", value_set=classes),
            f"label must be one of {classes}",
        ),
        "split": (
            exp.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
            f"split must be one of {list(SPLITS)}",
        ),
        "mode": (
            exp.ExpectColumnValuesToBeInSet(
                column="mode", value_set=allowed_modes, row_condition=readable
            ),
            f"image mode must be one of {allowed_modes}",
        ),
        "width": (
            exp.ExpectColumnValuesToBeBetween(
                column="width", min_value=min_size, max_value=max_size, row_condition=readable
            ),
            f"image width must be {size}",
        ),
        "height": (
            exp.ExpectColumnValuesToBeBetween(
                column="height", min_value=min_size, max_value=max_size, row_condition=readable
            ),
            f"image height must be {size}",
        ),
        "patient_one_split": (
            exp.ExpectColumnValuesToBeInSet(column=_PATIENT_SPLITS, value_set=[1]),
            _patients_message,
        ),
    }
    if min_per_class > 0:
        rules["class_count"] = (
            exp.ExpectColumnValuesToBeBetween(column=_CLASS_COUNT, min_value=min_per_class),
            _class_count_message(min_per_class),
        )
        # Per-row counts cannot see a class with no images at all; this aggregate can.
        rules["class_present"] = (
            exp.ExpectColumnDistinctValuesToContainSet(column="label", value_set=classes),
            _missing_classes_message(classes, min_per_class),
        )
    return rules


def _patients_message(frame: pd.DataFrame, rows: list[int], _: dict) -> str:
    bad = frame.iloc[rows]
    splits = bad.groupby("patient_id", sort=True)["split"].agg(lambda s: sorted(set(s)))
    named = ", ".join(f"{patient} ({'/'.join(s)})" for patient, s in splits.items())
    return f"each patient must be in exactly one split; in several: {named}"


def _class_count_message(min_per_class: int) -> Callable[[pd.DataFrame, list[int], dict], str]:
    def message(frame: pd.DataFrame, rows: list[int], _: dict) -> str:
        counts = frame.iloc[rows]["label"].value_counts().sort_index()
        named = ", ".join(f"{label!r} has {n}" for label, n in counts.items())
        return f"each class needs at least {min_per_class} images; {named}"

    return message


def _missing_classes_message(
    classes: list[str], min_per_class: int
) -> Callable[[pd.DataFrame, list[int], dict], str]:
    def message(frame: pd.DataFrame, _: list[int], __: dict) -> str:
        # Read from the table: the shape of this result dict changed across GX 1.x releases.
        seen = set(frame["label"])
        missing = [c for c in classes if c not in seen]
        return f"each class needs at least {min_per_class} images; no images for {missing}"

    return message


def _paths(frame: pd.DataFrame, rows: list[int]) -> tuple[str, ...]:
    paths = frame["path"].iloc[rows]
    return tuple(
        p if isinstance(p, str) and p else f"<row {i}>" for i, p in zip(rows, paths, strict=True)
    )


def _validate(frame: pd.DataFrame, rules: dict[str, tuple[gx.expectations.Expectation, _Message]]):
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    # In memory only: no gx/ folder, no data docs. It also becomes GX's "current project",
    # which a suite needs before expectations can be added to it.
    context = gx.get_context(mode="ephemeral", project_config=config)
    suite = gx.ExpectationSuite(name="histoflow_data_contract")
    for key, (expectation, _) in rules.items():
        # The rule key travels with the result, so each failure finds its message.
        expectation.meta = {"rule": key}
        suite.add_expectation(expectation)
    asset = context.data_sources.add_pandas("histoflow").add_dataframe_asset("images")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
        batch_parameters={"dataframe": frame}
    )
    # COMPLETE: the full unexpected_index_list (row positions), not a 20-row sample.
    return batch.validate(suite, result_format={"result_format": "COMPLETE"})


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # GX logs store and deprecation chatter during a run; none of it is actionable here.
    logger = logging.getLogger("great_expectations")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
