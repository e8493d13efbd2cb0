"""Data drift between a reference and a current table of per-image features, with Evidently.

Writes the Evidently HTML report for people and a small JSON summary for machines
(``drift_detected``, per-column scores), both atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

from histoflow.io import atomic_path, write_json

__all__ = ["drift_report"]

_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
_DRIFTED_COUNT = "evidently:metric_v2:DriftedColumnsCount"


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Sequence[str],
    out_dir: Path,
    drift_share: float = 0.5,
    stattest_threshold: float = 0.05,
    method: str = "ks",
    extra: dict | None = None,
) -> dict:
    """Compare ``current`` with ``reference`` column by column and save the reports.

    A column drifts when its test says so (with the default two-sample Kolmogorov-Smirnov
    test: p-value below ``stattest_threshold``); the dataset drifts when the share of drifted
    columns is at least ``drift_share``. Columns that are all NaN in either table cannot be
    compared; they are left out and listed under ``dropped_columns``.

    Args:
        reference: Features of the reference images (e.g. the training set).
        current: Features of the new batch.
        columns: Numeric feature columns to compare.
        out_dir: Folder for ``drift.html`` and ``drift.json`` (created if needed).
        drift_share: Share of drifted columns at which the dataset counts as drifted.
        stattest_threshold: Per-column threshold of ``method``. For p-value tests (``ks``)
            drift is a score below it; for distances (``wasserstein``, ``psi``) a score at or
            above it, so change both together.
        method: Evidently stat test for every column, e.g. ``"ks"``, ``"wasserstein"``.
            Fixed rather than auto-chosen so that ``stattest_threshold`` keeps one meaning
            whatever the table sizes (Evidently switches tests above 1,000 rows).
        extra: Keys merged into the top level of the JSON summary (e.g. batch name).

    Returns:
        The summary written to ``drift.json``: ``drift_detected``, ``drift_share`` (observed),
        ``threshold_share``, ``n_reference``, ``n_current``, ``columns`` (name ->
        ``{"drifted", "score", "method"}``), ``dropped_columns``, and ``extra``'s keys.

    Raises:
        ValueError: If either table is empty, a column is missing, or no column has data.
    """
    columns = list(columns)
    _check_inputs(reference, current, columns)
    kept = [c for c in columns if reference[c].notna().any() and current[c].notna().any()]
    dropped = [c for c in columns if c not in kept]
    if not kept:
        raise ValueError(
            f"drift: no column to compare; {dropped} are all NaN in the reference or current table"
        )

    definition = DataDefinition(numerical_columns=kept)
    report = Report(
        [
            DataDriftPreset(
                columns=kept, drift_share=drift_share, method=method, threshold=stattest_threshold
            )
        ],
        # The per-column tests carry Evidently's own drifted/not-drifted verdict.
        include_tests=True,
    )
    snapshot = report.run(
        Dataset.from_pandas(current[kept], data_definition=definition),
        Dataset.from_pandas(reference[kept], data_definition=definition),
    )
    # Round-trip through Evidently's JSON encoder: the dict holds numpy scalars.
    results = json.loads(snapshot.json())
    observed_share, per_column = _parse(results)

    summary = {
        **(extra or {}),
        "drift_detected": bool(observed_share >= drift_share),
        "drift_share": observed_share,
        "threshold_share": drift_share,
        "stattest_threshold": stattest_threshold,
        "n_reference": len(reference),
        "n_current": len(current),
        "columns": {c: per_column[c] for c in kept},
        "dropped_columns": dropped,
    }
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "drift.html") as tmp:
        # Snapshot.save_html silently writes nothing when given a Path, so render ourselves.
        tmp.write_text(snapshot.get_html_str(as_iframe=False), encoding="utf-8")
    write_json(out_dir / "drift.json", summary)
    return summary


def _check_inputs(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> None:
    if not columns:
        raise ValueError("drift: `columns` is empty; name the feature columns to compare")
    for name, table in (("reference", reference), ("current", current)):
        if len(table) == 0:
            raise ValueError(f"drift: the {name} table is empty; it needs at least one row")
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise ValueError(
                f"drift: column(s) {missing} missing from the {name} table; "
                f"it has {sorted(map(str, table.columns))}"
            )


def _parse(results: dict) -> tuple[float, dict[str, dict]]:
    share = None
    per_column: dict[str, dict] = {}
    for metric in results["metrics"]:
        config = metric["config"]
        if config["type"] == _DRIFTED_COUNT:
            share = float(metric["value"]["share"])
        elif config["type"] == _VALUE_DRIFT:
            per_column[config["column"]] = {
                "score": float(metric["value"]),
                "method": config.get("method"),
                "drifted": False,
            }
    for test in results["tests"]:
        params = test["metric_config"]["params"]
        if params["type"] == _VALUE_DRIFT:
            per_column[params["column"]]["drifted"] = test["status"] == "FAIL"
    if share is None:
        raise RuntimeError("drift: Evidently returned no DriftedColumnsCount result")
    return share, per_column
