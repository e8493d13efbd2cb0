"""The data contract: a Great Expectations suite run on the per-image table.

One row per image (``path``, ``label``, ``split``, ``patient_id``, ``readable`` and the QC
columns of :mod:`histoflow.data.qc`). Each check is named after a field of
:class:`~histoflow.config.ValidateChecks`, whose level decides what a failure means: ``error``
fails the contract, ``warning`` is reported, ``off`` skips the check. Three ``schema``
expectations (path set and unique, split known) always run as errors: nothing downstream works
without them.

Every check is one or two GX expectations, so GX is the one engine and every result has GX's
statistics. Checks that compare rows run on a helper column derived in pandas first (say,
``_patient_n_splits``, the number of splits each row's patient is in); the near-duplicate check
runs the banded perceptual-hash search of :mod:`histoflow.data.duplicates` into the boolean
column ``_near_duplicate_across_splits`` and expects it False. The suite is built in code and
run in an ephemeral GX context, so nothing is written into the project. Every failed
expectation becomes a :class:`Violation` that names the offending files.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import great_expectations as gx
import numpy as np
import pandas as pd
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.expectations.row_conditions import Column

from histoflow.config import ValidateChecks, ValidateConfig
from histoflow.data.duplicates import near_duplicate_pairs
from histoflow.data.manifest import SPLITS

__all__ = [
    "CHECKS",
    "REQUIRED_COLUMNS",
    "ContractResult",
    "Violation",
    "check_contract",
]

REQUIRED_COLUMNS: tuple[str, ...] = ("path", "label", "split", "patient_id", "readable")
CHECKS: tuple[str, ...] = tuple(ValidateChecks.model_fields)
_SCHEMA = "schema"

# Columns a check reads besides REQUIRED_COLUMNS; needed only while the check is on.
_CHECK_COLUMNS: dict[str, tuple[str, ...]] = {
    "unreadable": ("bytes",),
    "duplicate_across_splits": ("sha256",),
    "mode": ("mode",),
    "size": ("width", "height"),
    "near_duplicate_across_splits": ("phash", "sha256"),
    "blurred": ("blur",),
    "blank": ("tissue_fraction",),
    "conflicting_labels": ("sha256",),
}
# GX result fields kept per expectation; the rest are row lists and queries as long as the data.
_RESULT_KEYS = frozenset(
    {
        "element_count",
        "missing_count",
        "missing_percent",
        "unexpected_count",
        "unexpected_percent",
        "unexpected_percent_nonmissing",
        "observed_value",
    }
)
# Examples named in a message; the violation's paths list every file.
_EXAMPLES = 3

# A message is fixed text, or built from the table and the offending row positions.
_Message = str | Callable[[pd.DataFrame, list[int]], str]


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
    """Outcome of :func:`check_contract`.

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
        unknown = checks - {*CHECKS, _SCHEMA}
        if unknown:
            raise ValueError(f"unknown check(s) {sorted(unknown)}; checks are {list(CHECKS)}")
        return {p for v in self.violations if v.check in checks for p in v.paths}

    def to_dict(self) -> dict:
        """Return a JSON-ready dict: success, counts, violations and GX's per-expectation results."""
        return {
            "success": self.success,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "statistics": _plain(self.statistics),
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


@dataclass(frozen=True)
class _Rule:
    check: str
    expectation: gx.expectations.Expectation
    message: _Message


def check_contract(
    table: pd.DataFrame, cfg: ValidateConfig, *, classes: Sequence[str]
) -> ContractResult:
    """Validate the per-image table against the data contract.

    Checks (each skipped when its level in ``cfg.checks`` is ``off``): ``unreadable`` (not
    an image, or 0 bytes); ``outside_root`` (absolute path or one leaving the data folder
    through ``..``); ``unknown_label``; ``class_min_count`` (fewer than ``min_per_class``
    images, or none); ``patient_leak`` (a patient in several splits);
    ``duplicate_across_splits`` (same sha256 in several splits); ``mode`` and ``size``
    (readable images only); ``near_duplicate_across_splits`` (perceptual hashes within
    ``near_duplicate_distance`` bits in different splits, bytes differing); ``blurred``
    (``blur < min_blur``) and ``blank`` (``tissue_fraction < min_tissue_fraction``),
    readable images only; ``class_imbalance`` (largest / smallest class above
    ``max_class_ratio``); ``conflicting_labels`` (same sha256, different labels).

    Args:
        table: One row per image; extra columns are ignored.
        cfg: Thresholds and the level of each check.
        classes: Allowed labels.

    Returns:
        The result, with one violation per failed expectation.

    Raises:
        ValueError: if ``table`` has no rows, or lacks a column that an enabled check needs.
    """
    if table.empty:
        raise ValueError("data contract: the table has no images; check the data folder")
    levels = {name: level for name, level in cfg.checks.model_dump().items() if level != "off"}
    _require_columns(table, levels)
    frame, near = _prepare(table, cfg, classes, levels)
    rules = [r for r in _rules(cfg, list(classes), near) if r.check in levels or r.check == _SCHEMA]
    with _quiet():
        validation = _validate(frame, rules)

    violations, expectations = [], []
    for res in validation.results:
        config = res.expectation_config
        rule = rules[config.meta["rule"]]
        level = levels.get(rule.check, "error")
        column = config.kwargs.get("column", "")
        expectations.append(
            {
                "check": rule.check,
                "level": level,
                "expectation": config.type,
                "column": column,
                "success": bool(res.success),
                "result": _plain({k: v for k, v in res.result.items() if k in _RESULT_KEYS}),
            }
        )
        if res.success:
            continue
        rows = sorted(res.result.get("unexpected_index_list") or [])
        message = rule.message if isinstance(rule.message, str) else rule.message(frame, rows)
        violations.append(
            Violation(rule.check, level, config.type, column, message, _paths(frame, rows))
        )
    return ContractResult(
        violations=tuple(violations),
        statistics=dict(validation.statistics),
        expectations=tuple(expectations),
    )


def _require_columns(table: pd.DataFrame, levels: dict[str, str]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    for check in levels:
        missing += [c for c in _CHECK_COLUMNS.get(check, ()) if c not in table.columns]
    if missing:
        needs = {c: [k for k in levels if c in _CHECK_COLUMNS.get(k, ())] for c in missing}
        named = ", ".join(f"{c!r} (for {', '.join(k) or 'every check'})" for c, k in needs.items())
        raise ValueError(
            f"data contract: table is missing column(s) {named}; measure them with "
            "histoflow.data.qc or set those checks to 'off' in validate.checks"
        )


def _prepare(
    table: pd.DataFrame, cfg: ValidateConfig, classes: Sequence[str], levels: dict[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    # A fresh RangeIndex makes GX's unexpected_index_list row positions into ``frame``.
    frame = table.reset_index(drop=True)
    # GX map expectations skip nulls: a missing label, split or size must fail, not pass.
    frame["readable"] = frame["readable"].astype("boolean").fillna(False).astype(bool)
    for column in ("label", "split", "mode"):
        if column in frame:
            frame[column] = frame[column].fillna("<missing>")
    for column in ("width", "height", "bytes"):
        if column in frame:
            missing = -1 if column != "bytes" else 0
            frame[column] = pd.to_numeric(frame[column], errors="coerce").fillna(missing)
    for column in ("blur", "tissue_fraction"):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")

    frame["_outside_root"] = [_leaves_root(p) for p in frame["path"]]
    frame["_patient_n_splits"] = (
        frame.groupby("patient_id")["split"].transform("nunique").fillna(1).astype(int)
    )
    # Only known classes are counted; an unknown label is the label rule's business.
    counts = frame.loc[frame["label"].isin(list(classes)), "label"].value_counts()
    frame["_class_count"] = frame["label"].map(counts)
    # One value for the whole table, so GX reports the ratio as the observed value.
    frame["_class_ratio"] = counts.max() / counts.min() if len(counts) > 1 else 1.0
    if "sha256" in frame:
        # Unreadable files fail their own check, and every empty file shares one sha256.
        same = frame["readable"] & frame["sha256"].fillna("").astype(str).ne("")
        by_sha = frame[same].groupby("sha256")
        frame["_sha_n_splits"] = by_sha["split"].transform("nunique").reindex(frame.index)
        frame["_sha_n_labels"] = by_sha["label"].transform("nunique").reindex(frame.index)
        for column in ("_sha_n_splits", "_sha_n_labels"):
            frame[column] = frame[column].fillna(1).astype(int)

    near = pd.DataFrame({"i": [], "j": [], "distance": []}, dtype=int)
    if "near_duplicate_across_splits" in levels:
        near = near_duplicate_pairs(
            frame["phash"].tolist(),
            cfg.near_duplicate_distance,
            groups=frame["split"].tolist(),
            distinct=frame["sha256"].tolist(),
        )
    flag = np.zeros(len(frame), dtype=bool)
    flag[near["i"].to_numpy()] = flag[near["j"].to_numpy()] = True
    frame["_near_duplicate_across_splits"] = flag
    return frame, near


def _leaves_root(path: Any) -> bool:
    if not isinstance(path, str) or not path:
        return False  # a missing path is the schema rule's business
    path = path.replace("\\", "/")
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        return True
    norm = posixpath.normpath(path)
    return norm == ".." or norm.startswith("../")


def _rules(cfg: ValidateConfig, classes: list[str], near: pd.DataFrame) -> list[_Rule]:
    exp = gx.expectations
    # Mode, size and pixel checks judge decoded images only, so an unreadable file fails once.
    # `Column == True` builds a GX row condition (E712 is about plain Python comparisons).
    readable = Column("readable") == True  # noqa: E712
    size = f"between {cfg.min_size} and {cfg.max_size} px"
    modes = list(cfg.allowed_modes)
    in_set, between = exp.ExpectColumnValuesToBeInSet, exp.ExpectColumnValuesToBeBetween
    return [
        _Rule(_SCHEMA, exp.ExpectColumnValuesToNotBeNull(column="path"), "path must be set"),
        _Rule(_SCHEMA, exp.ExpectColumnValuesToBeUnique(column="path"), "paths must be unique"),
        _Rule(
            _SCHEMA,
            in_set(column="split", value_set=list(SPLITS)),
            f"split must be one of {list(SPLITS)}",
        ),
        _Rule("unreadable", in_set(column="readable", value_set=[True]), _unreadable_message),
        _Rule(
            "unreadable",
            between(column="bytes", min_value=1),
            "file must not be empty (0 bytes)",
        ),
        _Rule(
            "outside_root",
            in_set(column="_outside_root", value_set=[False]),
            "path must stay inside the data folder (no absolute paths, no '..' out of it)",
        ),
        _Rule(
            "unknown_label",
            in_set(column="label", value_set=classes),
            _found(f"label must be one of {classes}", "label"),
        ),
        _Rule(
            "class_min_count",
            between(column="_class_count", min_value=cfg.min_per_class),
            _class_count_message(cfg.min_per_class),
        ),
        # Per-row counts cannot see a class with no images at all; this aggregate can.
        _Rule(
            "class_min_count",
            exp.ExpectColumnDistinctValuesToContainSet(column="label", value_set=classes),
            _missing_classes_message(classes, cfg.min_per_class),
        ),
        _Rule("patient_leak", in_set(column="_patient_n_splits", value_set=[1]), _patients_message),
        _Rule(
            "duplicate_across_splits",
            in_set(column="_sha_n_splits", value_set=[1]),
            _groups_message("identical files (same sha256) must not be in two splits", "split"),
        ),
        _Rule(
            "mode",
            in_set(column="mode", value_set=modes, row_condition=readable),
            _found(f"image mode must be one of {modes}", "mode"),
        ),
        *(
            _Rule(
                "size",
                between(
                    column=side,
                    min_value=cfg.min_size,
                    max_value=cfg.max_size,
                    row_condition=readable,
                ),
                f"image {side} must be {size}",
            )
            for side in ("width", "height")
        ),
        _Rule(
            "near_duplicate_across_splits",
            in_set(column="_near_duplicate_across_splits", value_set=[False]),
            _near_message(near, cfg.near_duplicate_distance),
        ),
        _Rule(
            "blurred",
            between(column="blur", min_value=cfg.min_blur, row_condition=readable),
            f"image must be in focus: blur (variance of the Laplacian) at least {cfg.min_blur}",
        ),
        _Rule(
            "blank",
            between(
                column="tissue_fraction",
                min_value=cfg.min_tissue_fraction,
                row_condition=readable,
            ),
            f"image must show tissue: tissue_fraction at least {cfg.min_tissue_fraction}",
        ),
        _Rule(
            "class_imbalance",
            exp.ExpectColumnMaxToBeBetween(column="_class_ratio", max_value=cfg.max_class_ratio),
            _imbalance_message(classes, cfg.max_class_ratio),
        ),
        _Rule(
            "conflicting_labels",
            in_set(column="_sha_n_labels", value_set=[1]),
            _groups_message("identical files (same sha256) must have one label", "label"),
        ),
    ]


def _unreadable_message(frame: pd.DataFrame, rows: list[int]) -> str:
    text = "file must open as an image (corrupt, truncated or not an image)"
    if "error" not in frame:
        return text
    errors = frame["error"].iloc[rows].dropna().astype(str)
    seen = list(dict.fromkeys(e for e in errors if e))[:_EXAMPLES]
    return f"{text}; e.g. {'; '.join(repr(e) for e in seen)}" if seen else text


def _found(text: str, column: str) -> Callable[[pd.DataFrame, list[int]], str]:
    def message(frame: pd.DataFrame, rows: list[int]) -> str:
        values = frame[column].iloc[rows].astype(str).value_counts().sort_index()
        return f"{text}; found " + ", ".join(f"{v!r} ({n})" for v, n in values.items())

    return message


def _patients_message(frame: pd.DataFrame, rows: list[int]) -> str:
    bad = frame.iloc[rows]
    splits = bad.groupby("patient_id", sort=True)["split"].agg(lambda s: sorted(set(s)))
    named = ", ".join(f"{patient} ({'/'.join(s)})" for patient, s in splits.iloc[:10].items())
    more = f" and {len(splits) - 10} more" if len(splits) > 10 else ""
    return f"each patient must be in exactly one split; {len(splits)} in several: {named}{more}"


def _class_count_message(min_per_class: int) -> Callable[[pd.DataFrame, list[int]], str]:
    def message(frame: pd.DataFrame, rows: list[int]) -> str:
        counts = frame.iloc[rows]["label"].value_counts().sort_index()
        named = ", ".join(f"{label!r} has {n}" for label, n in counts.items())
        return f"each class needs at least {min_per_class} images; {named}"

    return message


def _missing_classes_message(
    classes: list[str], min_per_class: int
) -> Callable[[pd.DataFrame, list[int]], str]:
    def message(frame: pd.DataFrame, _: list[int]) -> str:
        # Read from the table: the shape of this result dict changed across GX 1.x releases.
        missing = [c for c in classes if c not in set(frame["label"])]
        return f"each class needs at least {min_per_class} images; no images for {missing}"

    return message


def _groups_message(text: str, column: str) -> Callable[[pd.DataFrame, list[int]], str]:
    def message(frame: pd.DataFrame, rows: list[int]) -> str:
        groups = list(frame.iloc[rows].groupby("sha256", sort=False))
        shown = [
            " = ".join(f"{p} ({v})" for p, v in zip(g["path"], g[column], strict=True))
            for _, g in groups[:_EXAMPLES]
        ]
        more = f"; and {len(groups) - _EXAMPLES} more" if len(groups) > _EXAMPLES else ""
        return f"{text}; {_plural(len(groups), 'group')}: {'; '.join(shown)}{more}"

    return message


def _near_message(near: pd.DataFrame, distance: int) -> Callable[[pd.DataFrame, list[int]], str]:
    def message(frame: pd.DataFrame, _: list[int]) -> str:
        path, split = frame["path"], frame["split"]
        shown = [
            f"{path[i]} ({split[i]}) ~ {path[j]} ({split[j]}), distance {d}"
            for i, j, d in near.head(_EXAMPLES).itertuples(index=False)
        ]
        more = f"; and {len(near) - _EXAMPLES} more" if len(near) > _EXAMPLES else ""
        return (
            "images in different splits must not be near duplicates (perceptual-hash distance "
            f"<= {distance}, bytes differing); {_plural(len(near), 'pair')}: "
            f"{'; '.join(shown)}{more}"
        )

    return message


def _imbalance_message(
    classes: list[str], max_ratio: float
) -> Callable[[pd.DataFrame, list[int]], str]:
    def message(frame: pd.DataFrame, _: list[int]) -> str:
        counts = frame["label"].value_counts()
        named = ", ".join(f"{c!r} {counts[c]}" for c in classes if c in counts)
        ratio = frame["_class_ratio"].max()
        return f"largest / smallest class must be at most {max_ratio:g}; is {ratio:.1f} ({named})"

    return message


def _paths(frame: pd.DataFrame, rows: list[int]) -> tuple[str, ...]:
    paths = frame["path"].iloc[rows]
    return tuple(
        p if isinstance(p, str) and p else f"<row {i}>" for i, p in zip(rows, paths, strict=True)
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _plain(value: Any) -> Any:
    # GX results hold numpy scalars and the odd custom object; JSON wants plain values.
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _validate(frame: pd.DataFrame, rules: list[_Rule]):
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    # In memory only: no gx/ folder, no data docs. It also becomes GX's "current project",
    # which a suite needs before expectations can be added to it.
    context = gx.get_context(mode="ephemeral", project_config=config)
    suite = gx.ExpectationSuite(name="histoflow_data_contract")
    for index, rule in enumerate(rules):
        # The rule's position travels with the result, so each failure finds its message.
        rule.expectation.meta = {"rule": index}
        suite.add_expectation(rule.expectation)
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
