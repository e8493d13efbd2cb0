"""The Great Expectations adapter: run the contract's rules as one suite, read back violations.

The suite is built in code and run in an ephemeral GX context, so nothing is written into the
project; GX is the one engine, and every result carries GX's statistics. Every failed
expectation becomes a :class:`~histoflow.data.quality.contract.results.Violation` that names
the offending files.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import Counter
from collections.abc import Iterator

import great_expectations as gx
import pandas as pd
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from histoflow.data.quality.contract.results import ContractResult, Violation, json_ready
from histoflow.data.quality.contract.rules import Rule

__all__ = ["run_rules"]

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
# Columns of the rules' row conditions (rules.py): given to each column's batch.
_CONDITION_COLUMNS = ("readable", "split")
_COUNTS = ("evaluated_expectations", "successful_expectations", "unsuccessful_expectations")


def run_rules(frame: pd.DataFrame, rules: list[Rule], levels: dict[str, str]) -> ContractResult:
    """Validate ``frame`` against ``rules`` with GX; one violation per failed expectation.

    Args:
        frame: The table with its derived columns and a RangeIndex (GX reports offending
            rows as positions, which name the files).
        rules: The rules to run.
        levels: Level of each enabled check; a check not in it (``schema``) is an error.
    """
    with _quiet():
        results, statistics = _validate(frame, rules)

    violations, expectations = [], []
    for res in results:
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
                "result": json_ready({k: v for k, v in res.result.items() if k in _RESULT_KEYS}),
            }
        )
        if res.success:
            continue
        rows = sorted(res.result.get("unexpected_index_list") or [])
        message = rule.message if isinstance(rule.message, str) else rule.message(frame, rows)
        paths = _paths(frame, rows) or rule.paths
        violations.append(Violation(rule.check, level, config.type, column, message, paths))
    return ContractResult(
        violations=tuple(violations),
        statistics=statistics,
        expectations=tuple(expectations),
    )


def _paths(frame: pd.DataFrame, rows: list[int]) -> tuple[str, ...]:
    paths = frame["path"].iloc[rows]
    return tuple(
        p if isinstance(p, str) and p else f"<row {i}>" for i, p in zip(rows, paths, strict=True)
    )


def _validate(frame: pd.DataFrame, rules: list[Rule]) -> tuple[list, dict]:
    """GX's result of each rule, in rule order, and the statistics of the whole suite.

    Every expectation reads one column (and the row conditions' ``readable`` and ``split``),
    so the rules run per column, each on a frame of those columns: GX copies the frame it
    validates, and the whole table cost ~0.5 KB per tile at 100,000 tiles. The results and
    row positions are those of one suite over the whole table.
    """
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    # In memory only: no gx/ folder, no data docs. It also becomes GX's "current project",
    # which a suite needs before expectations can be added to it.
    context = gx.get_context(mode="ephemeral", project_config=config)
    asset = context.data_sources.add_pandas("histoflow").add_dataframe_asset("images")
    by_column: dict[str, list[int]] = {}
    for index, rule in enumerate(rules):
        # The rule's position travels with the result, so each failure finds its message.
        rule.expectation.meta = {"rule": index}
        by_column.setdefault(rule.expectation.column, []).append(index)
    results, counts = [], Counter()
    for n, (column, indices) in enumerate(by_column.items()):
        suite = gx.ExpectationSuite(name=f"histoflow_data_contract_{n}")
        for index in indices:
            suite.add_expectation(rules[index].expectation)
        read = [column, *(c for c in _CONDITION_COLUMNS if c != column and c in frame)]
        batch = asset.add_batch_definition_whole_dataframe(f"column {n}").get_batch(
            batch_parameters={"dataframe": frame[read]}
        )
        # COMPLETE: the full unexpected_index_list (row positions), not a 20-row sample.
        validation = batch.validate(suite, result_format={"result_format": "COMPLETE"})
        results += validation.results
        counts.update({k: validation.statistics[k] for k in _COUNTS})
    evaluated = counts["evaluated_expectations"]
    statistics = {
        **{k: counts[k] for k in _COUNTS},
        "success_percent": 100 * counts["successful_expectations"] / evaluated
        if evaluated
        else None,
    }
    return sorted(results, key=lambda res: res.expectation_config.meta["rule"]), statistics


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
