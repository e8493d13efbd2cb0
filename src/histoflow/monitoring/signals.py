"""Drift of each monitoring signal, tested by Evidently: columns of numbers, and predictions.

``features`` and ``embeddings`` are tables of numbers compared column by column; ``predictions``
compares the predicted class shares (a categorical test) and the confidence distribution.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.legacy.calculations.stattests import StatTest, register_stattest
from evidently.legacy.core import ColumnType
from evidently.presets import DataDriftPreset
from scipy.stats import chi2_contingency

from histoflow.config import MonitorConfig
from histoflow.monitoring.data import CONFIDENCE, PREDICTED

__all__ = ["columns_drift", "number", "predictions_drift"]

# The class distribution is categorical, so cfg.method (ks, wasserstein) can't test it; this
# picks the categorical test whose score reads like cfg.method's, so that one
# cfg.stattest_threshold serves both: a p-value for ks, a distance in [0, 1] for wasserstein.
_CLASS_TEST = {"ks": "chi2_contingency", "wasserstein": "jensenshannon", "psi": "psi"}
_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
_DRIFTED_COUNT = "evidently:metric_v2:DriftedColumnsCount"


def _chi2_two_sample(
    reference: pd.Series, current: pd.Series, feature_type: ColumnType, threshold: float
) -> tuple[float, bool]:
    # Evidently's "chisquare" fits the batch to the reference's shares as if they were exact;
    # with a reference not much larger than the batch that flags drift in over half of
    # same-distribution batches (2,000 vs 5,000 rows). A 2 x k contingency table counts the
    # reference's sampling noise too.
    table = pd.concat(
        [reference.value_counts(), current.value_counts()], axis=1, keys=["ref", "cur"]
    ).fillna(0)
    if len(table) < 2:  # one class in both sets: nothing to compare
        return 1.0, False
    p_value = float(chi2_contingency(table.to_numpy().T)[1])
    return p_value, p_value < threshold


register_stattest(
    StatTest(
        name="chi2_contingency",
        display_name="chi-square two-sample p_value",
        allowed_feature_types=[ColumnType.Categorical],
    ),
    default_impl=_chi2_two_sample,
)


def columns_drift(
    table: str, reference: pd.DataFrame, current: pd.DataFrame, cfg: MonitorConfig, share: float
) -> tuple[dict, Snapshot]:
    """Test every column; the table drifts when the share of drifted columns reaches ``share``.

    Columns that are all NaN in either set are left out and listed under ``dropped_columns``.

    Returns:
        ``{drifted, share, threshold, columns: {name: {drifted, score, method}},
        dropped_columns}`` and Evidently's snapshot (for the HTML page).
    """
    columns = [str(c) for c in reference.columns]
    reference, current = reference.set_axis(columns, axis=1), current.set_axis(columns, axis=1)
    kept = [c for c in columns if reference[c].notna().any() and current[c].notna().any()]
    if not kept:
        raise ValueError(
            f"monitoring_report: every {table} column is all NaN in the reference or the batch"
        )
    snapshot = _run_drift(reference[kept], current[kept], cfg, share, numerical=kept)
    observed, per_column = _parse(json.loads(snapshot.json()))
    result = {
        "drifted": bool(observed >= share),
        "share": observed,
        "threshold": share,
        "columns": {c: _clean(per_column[c]) for c in kept},
        "dropped_columns": [c for c in columns if c not in kept],
    }
    return result, snapshot


def predictions_drift(
    reference: pd.DataFrame, current: pd.DataFrame, cfg: MonitorConfig, classes: list[str]
) -> tuple[dict, Snapshot]:
    """Drift of the predicted class shares or of the confidence distribution.

    Returns:
        ``{drifted, class_shares: {reference, current}, class_test, confidence}`` and
        Evidently's snapshot.
    """
    columns = [PREDICTED, CONFIDENCE]
    reference = reference[columns].astype({PREDICTED: str, CONFIDENCE: float})
    current = current[columns].astype({PREDICTED: str, CONFIDENCE: float})
    class_test = _CLASS_TEST[cfg.method]
    # With two columns, Evidently's "share of drifted columns < 0.5" test fails exactly when
    # either drifts, so its verdict in the HTML matches ours.
    snapshot = _run_drift(
        reference,
        current,
        cfg,
        0.5,
        numerical=[CONFIDENCE],
        categorical=[PREDICTED],
        per_column_method={PREDICTED: class_test, CONFIDENCE: cfg.method},
    )
    _, per_column = _parse(json.loads(snapshot.json()))
    class_result, confidence = _clean(per_column[PREDICTED]), _clean(per_column[CONFIDENCE])
    result = {
        "drifted": class_result["drifted"] or confidence["drifted"],
        "class_shares": {
            "reference": _shares(reference[PREDICTED], classes),
            "current": _shares(current[PREDICTED], classes),
        },
        "class_test": class_result,
        "confidence": {
            "reference_mean": float(reference[CONFIDENCE].mean()),
            "current_mean": float(current[CONFIDENCE].mean()),
            **confidence,
        },
    }
    return result, snapshot


def _run_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: MonitorConfig,
    share: float,
    *,
    numerical: list[str],
    categorical: Sequence[str] = (),
    per_column_method: dict[str, str] | None = None,
) -> Snapshot:
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=list(categorical))
    preset = DataDriftPreset(
        columns=list(reference.columns),
        drift_share=share,
        # Fixed, not auto-chosen: Evidently switches tests with the table size, which would
        # change what cfg.stattest_threshold means from batch to batch.
        method=cfg.method,
        per_column_method=per_column_method,
        threshold=cfg.stattest_threshold,
    )
    # The per-column tests carry Evidently's own drifted/not-drifted verdict.
    return Report([preset], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
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


def _shares(predicted: pd.Series, classes: list[str]) -> dict[str, float]:
    counts = predicted.value_counts()
    return {c: float(counts.get(c, 0) / len(predicted)) for c in classes}


def _clean(column: dict) -> dict:
    return {
        "drifted": bool(column["drifted"]),
        "score": number(column["score"]),
        "method": column["method"],
    }


def number(value: float) -> float | None:
    """``value`` as a float, or None where it is not finite (JSON has no NaN)."""
    # drift.json has no NaN: an undefined score (e.g. a constant column) is null there, and
    # the returned summary must equal the file.
    value = float(value)
    return value if np.isfinite(value) else None
