"""Classification quality of a labelled batch, measured by histoflow and shown by Evidently."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from evidently import (
    BinaryClassification,
    DataDefinition,
    Dataset,
    MulticlassClassification,
    Report,
)
from evidently.core.report import Snapshot
from evidently.presets import ClassificationPreset
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score

from histoflow.metrics import macro_recall
from histoflow.monitoring.data import PREDICTED, MonitorData
from histoflow.monitoring.signals import number

__all__ = ["performance"]

_LABEL = "label"


def performance(
    reference: MonitorData, current: MonitorData, classes: list[str]
) -> tuple[dict | None, Snapshot | None]:
    """Accuracy, balanced accuracy, macro recall and per-class recall of a labelled batch.

    Returns:
        The metrics (None when the batch has no labels) and Evidently's classification
        snapshot (with the reference's quality beside it when the reference is labelled).
    """
    if current.labels is None:
        return None, None
    cur = _labelled(current)
    if cur.empty:
        return None, None
    truth, predicted = cur[_LABEL].to_numpy(), cur[PREDICTED].to_numpy()
    with warnings.catch_warnings():
        # A class predicted but absent from the labels is expected in a small batch.
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(truth, predicted)
    # zero_division=nan leaves classes without labelled images out of the macro average.
    recalls = recall_score(truth, predicted, labels=classes, average=None, zero_division=np.nan)
    metrics = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "balanced_accuracy": float(balanced),
        "macro_recall": macro_recall(
            np.array([classes.index(c) for c in truth]),
            np.array([classes.index(c) if c in classes else -1 for c in predicted]),
            len(classes),
        ),
        "per_class_recall": {c: number(r) for c, r in zip(classes, recalls, strict=True)},
        "n": len(cur),
    }
    # Evidently shows the reference's quality beside the batch's when both are labelled.
    ref = _labelled(reference) if reference.labels is not None else pd.DataFrame()
    seen = set(cur[_LABEL]) | set(cur[PREDICTED])
    ref_seen = set(ref[_LABEL]) | set(ref[PREDICTED]) if len(ref) else set()
    if len(seen) == 2:
        # Evidently scores any data with exactly two labels as binary, with positive label 1
        # unless told (a KeyError for named classes): a two-class model, or a batch of two of
        # the classes. The positive class is the later one in the model's order.
        pos = max(seen, key=lambda c: (classes.index(c) if c in classes else len(classes), c))
        task = BinaryClassification(target=_LABEL, prediction_labels=PREDICTED, pos_label=pos)
        keep_ref = ref_seen <= seen
    else:
        task = MulticlassClassification(target=_LABEL, prediction_labels=PREDICTED)
        keep_ref = len(ref_seen) != 2  # a two-label reference would be scored as binary
    if not keep_ref:  # one task definition covers both datasets: the batch's wins
        ref = pd.DataFrame()
    definition = DataDefinition(categorical_columns=[_LABEL, PREDICTED], classification=[task])
    with warnings.catch_warnings():
        # Evidently's precision and recall per class warn for every class absent from a batch.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        snapshot = Report([ClassificationPreset()]).run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition) if len(ref) else None,
        )
    return metrics, snapshot


def _labelled(data: MonitorData) -> pd.DataFrame:
    table = pd.DataFrame(
        {_LABEL: data.labels.to_numpy(), PREDICTED: data.predictions[PREDICTED].to_numpy()}
    )
    return table.dropna(subset=[_LABEL]).astype(str).reset_index(drop=True)
