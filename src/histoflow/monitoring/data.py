"""What monitoring compares: the tables describing one set of images, and their checks."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

__all__ = ["CONFIDENCE", "PREDICTED", "MonitorData", "check_pair"]

PREDICTED, CONFIDENCE = "predicted", "confidence"


@dataclass(frozen=True, eq=False)  # eq=False: comparing DataFrames with == is elementwise
class MonitorData:
    """What monitoring knows about one set of images; the tables' rows align by position.

    Attributes:
        features: Per-image QC features, numeric columns only (NaN where undefined, e.g. stain
            densities of greyscale images).
        embeddings: The champion's embeddings reduced by PCA, columns ``pc_0`` .. ``pc_{k-1}``.
        predictions: Columns ``predicted`` (class name) and ``confidence`` (in [0, 1]).
        labels: True class per row, when known (missing values allowed: those rows are skipped).
    """

    features: pd.DataFrame
    embeddings: pd.DataFrame
    predictions: pd.DataFrame
    labels: pd.Series | None = None


def check_pair(reference: MonitorData, current: MonitorData, classes: list[str]) -> None:
    """Check that a reference and a batch can be compared.

    Raises:
        ValueError: If a set is empty, the two sets' columns differ, tables of the batch have
            different lengths, a column is not numeric, or a class is unknown.
    """
    for name, data in (("reference", reference), ("current", current)):
        _check_data(name, data, classes)
    _check_same_columns("features", reference.features, current.features)
    _check_same_columns("embeddings", reference.embeddings, current.embeddings)


def _check_data(name: str, data: MonitorData, classes: list[str]) -> None:
    n = len(data.predictions)
    lengths = {"features": len(data.features), "embeddings": len(data.embeddings)}
    if n == 0 or 0 in lengths.values():
        raise ValueError(f"monitoring_report: the {name} set is empty; it needs at least one image")
    if data.labels is not None:
        lengths["labels"] = len(data.labels)
    # A batch's tables describe the same images. The reference's need not: the champion's
    # features come from its training split, embeddings and predictions from held-out images.
    wrong = {table: length for table, length in lengths.items() if length != n}
    if wrong and name == "current":
        raise ValueError(
            f"monitoring_report: {name} tables must have one row per image; predictions has {n}"
            f" rows but {wrong}"
        )
    for table_name, table in (("features", data.features), ("embeddings", data.embeddings)):
        text = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
        if text:
            raise ValueError(
                f"monitoring_report: {name} {table_name} column(s) {text} are not numeric; "
                "pass only the numeric columns to compare"
            )
    missing = {PREDICTED, CONFIDENCE} - set(data.predictions.columns)
    if missing:
        raise ValueError(
            f"monitoring_report: {name} predictions lack column(s) {sorted(missing)}; "
            f"it has {sorted(map(str, data.predictions.columns))}"
        )
    confidence = data.predictions[CONFIDENCE].to_numpy(dtype=float)
    if not ((confidence >= 0) & (confidence <= 1)).all():
        raise ValueError(f"monitoring_report: {name} confidence must lie in [0, 1] (no NaN)")
    labels = data.labels.dropna() if data.labels is not None else pd.Series(dtype=object)
    for what, values in (("predicted classes", data.predictions[PREDICTED]), ("labels", labels)):
        unknown = sorted(set(values.astype(str)) - set(classes))
        if unknown:
            raise ValueError(
                f"monitoring_report: {name} {what} {unknown} are not among classes {classes}"
            )


def _check_same_columns(table: str, reference: pd.DataFrame, current: pd.DataFrame) -> None:
    only_ref = [c for c in reference.columns if c not in current.columns]
    only_cur = [c for c in current.columns if c not in reference.columns]
    if only_ref or only_cur:
        raise ValueError(
            f"monitoring_report: {table} columns differ between reference and current: "
            f"only in reference {only_ref}, only in current {only_cur}; compute both the same way"
        )
    if len(reference.columns) == 0:
        raise ValueError(f"monitoring_report: the {table} tables have no columns")
