"""One monitoring report for a batch of images: drift of three signals, and performance.

The signals compare the batch (``current``) with the champion's reference set:

- ``features``: per-image QC features (brightness, stain densities, ...), column by column;
- ``embeddings``: the champion's embeddings in a small PCA space, column by column;
- ``predictions``: the predicted class shares and the confidence distribution.

When the batch has true labels, its classification quality is measured too. Everything runs
through Evidently; ``drift.html`` is one page for people (a short verdict, then the Evidently
sections) and ``drift.json`` the summary for machines.
"""

from __future__ import annotations

import html
import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from evidently import (
    BinaryClassification,
    DataDefinition,
    Dataset,
    MulticlassClassification,
    Report,
)
from evidently.core.metric_types import render_widgets
from evidently.core.report import Snapshot
from evidently.legacy.calculations.stattests import StatTest, register_stattest
from evidently.legacy.core import ColumnType
from evidently.legacy.renderers.html_widgets import group_widget, header_text
from evidently.presets import ClassificationPreset, DataDriftPreset
from scipy.stats import chi2_contingency
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score

from histoflow.config import MonitorConfig
from histoflow.io import atomic_path, write_json
from histoflow.monitoring.drift import _parse

__all__ = ["MonitorData", "monitoring_report"]

# The class distribution is categorical, so cfg.method (ks, wasserstein) can't test it; this
# picks the categorical test whose score reads like cfg.method's, so that one
# cfg.stattest_threshold serves both: a p-value for ks, a distance in [0, 1] for wasserstein.
_CLASS_TEST = {"ks": "chi2_contingency", "wasserstein": "jensenshannon", "psi": "psi"}
_PREDICTED, _CONFIDENCE, _LABEL = "predicted", "confidence", "label"
_KEYS = ("drift_detected", "counted_signals", "signals", "performance", "n_reference", "n_current")


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


def monitoring_report(
    reference: MonitorData,
    current: MonitorData,
    cfg: MonitorConfig,
    out_dir: Path,
    *,
    classes: Sequence[str],
    extra: dict | None = None,
) -> dict:
    """Compare a batch with the reference and write ``drift.html`` and ``drift.json``.

    Features and embeddings use ``cfg.method`` on every column at ``cfg.stattest_threshold``;
    the signal drifts when the share of drifted columns is at least ``cfg.drift_share``
    (features) or ``cfg.embedding_drift_share`` (embeddings). Columns that are all NaN in
    either set are left out and listed under ``dropped_columns``. Predictions drift when the
    class shares drift (two-sample chi-square p-value for ``ks``, Jensen-Shannon distance for
    ``wasserstein``, PSI for ``psi``, all at ``cfg.stattest_threshold``) or the confidence
    does (``cfg.method``). The batch drifts when any signal in ``cfg.signals`` drifts.

    Args:
        reference: The champion's reference set.
        current: The new batch.
        cfg: The ``monitor`` section of ``params.yaml``.
        out_dir: Folder for ``drift.html`` and ``drift.json`` (created if needed).
        classes: The champion's class names; predictions and labels must be among them.
        extra: Keys added to the top level of the summary (e.g. the batch name).

    Returns:
        The summary written to ``drift.json``: ``drift_detected``, ``counted_signals``,
        ``signals`` (``features``, ``embeddings``, ``predictions``), ``performance`` (None
        without labels; else ``accuracy``, ``balanced_accuracy``, ``macro_recall`` (the mean
        recall over classes present in the labels, so equal to the balanced accuracy),
        ``per_class_recall`` (None for a class with no labelled image) and ``n``),
        ``n_reference``, ``n_current`` and ``extra``'s keys.

    Raises:
        ValueError: If a set is empty, the two sets' columns differ, tables of one set have
            different lengths, a class is unknown, or ``extra`` reuses a summary key.
    """
    clash = sorted(set(extra or {}) & set(_KEYS))
    if clash:
        raise ValueError(f"monitoring_report: `extra` reuses summary key(s) {clash}; rename them")
    classes = [str(c) for c in classes]
    for name, data in (("reference", reference), ("current", current)):
        _check_data(name, data, classes)
    _check_same_columns("features", reference.features, current.features)
    _check_same_columns("embeddings", reference.embeddings, current.embeddings)

    features, features_snap = _columns_drift(
        "features", reference.features, current.features, cfg, cfg.drift_share
    )
    embeddings, embeddings_snap = _columns_drift(
        "embeddings", reference.embeddings, current.embeddings, cfg, cfg.embedding_drift_share
    )
    predictions, predictions_snap = _predictions_drift(
        reference.predictions, current.predictions, cfg, classes
    )
    performance, performance_snap = _performance(reference, current, classes)

    signals = {"features": features, "embeddings": embeddings, "predictions": predictions}
    summary = {
        "drift_detected": any(signals[name]["drifted"] for name in cfg.signals),
        "counted_signals": list(cfg.signals),
        "signals": signals,
        "performance": performance,
        "n_reference": len(reference.predictions),
        "n_current": len(current.predictions),
    }
    summary = {**summary, **(extra or {})}

    sections = [
        ("Features: data drift", features_snap),
        ("Embeddings: drift of the PCA components", embeddings_snap),
        ("Predictions: class shares and confidence", predictions_snap),
    ]
    if performance_snap is not None:
        sections.append(("Performance on the labelled images", performance_snap))
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "drift.html") as tmp:
        tmp.write_text(_page(_header(summary), sections), encoding="utf-8")
    write_json(out_dir / "drift.json", summary)
    return summary


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
    missing = {_PREDICTED, _CONFIDENCE} - set(data.predictions.columns)
    if missing:
        raise ValueError(
            f"monitoring_report: {name} predictions lack column(s) {sorted(missing)}; "
            f"it has {sorted(map(str, data.predictions.columns))}"
        )
    confidence = data.predictions[_CONFIDENCE].to_numpy(dtype=float)
    if not ((confidence >= 0) & (confidence <= 1)).all():
        raise ValueError(f"monitoring_report: {name} confidence must lie in [0, 1] (no NaN)")
    labels = data.labels.dropna() if data.labels is not None else pd.Series(dtype=object)
    for what, values in (("predicted classes", data.predictions[_PREDICTED]), ("labels", labels)):
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


def _columns_drift(
    table: str, reference: pd.DataFrame, current: pd.DataFrame, cfg: MonitorConfig, share: float
) -> tuple[dict, Snapshot]:
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


def _predictions_drift(
    reference: pd.DataFrame, current: pd.DataFrame, cfg: MonitorConfig, classes: list[str]
) -> tuple[dict, Snapshot]:
    columns = [_PREDICTED, _CONFIDENCE]
    reference = reference[columns].astype({_PREDICTED: str, _CONFIDENCE: float})
    current = current[columns].astype({_PREDICTED: str, _CONFIDENCE: float})
    class_test = _CLASS_TEST[cfg.method]
    # With two columns, Evidently's "share of drifted columns < 0.5" test fails exactly when
    # either drifts, so its verdict in the HTML matches ours.
    snapshot = _run_drift(
        reference,
        current,
        cfg,
        0.5,
        numerical=[_CONFIDENCE],
        categorical=[_PREDICTED],
        per_column_method={_PREDICTED: class_test, _CONFIDENCE: cfg.method},
    )
    _, per_column = _parse(json.loads(snapshot.json()))
    class_result, confidence = _clean(per_column[_PREDICTED]), _clean(per_column[_CONFIDENCE])
    result = {
        "drifted": class_result["drifted"] or confidence["drifted"],
        "class_shares": {
            "reference": _shares(reference[_PREDICTED], classes),
            "current": _shares(current[_PREDICTED], classes),
        },
        "class_test": class_result,
        "confidence": {
            "reference_mean": float(reference[_CONFIDENCE].mean()),
            "current_mean": float(current[_CONFIDENCE].mean()),
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


def _performance(
    reference: MonitorData, current: MonitorData, classes: list[str]
) -> tuple[dict | None, Snapshot | None]:
    if current.labels is None:
        return None, None
    cur = _labelled(current)
    if cur.empty:
        return None, None
    truth, predicted = cur[_LABEL].to_numpy(), cur[_PREDICTED].to_numpy()
    with warnings.catch_warnings():
        # A class predicted but absent from the labels is expected in a small batch.
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(truth, predicted)
    # zero_division=nan leaves classes without labelled images out of the macro average.
    recalls = recall_score(truth, predicted, labels=classes, average=None, zero_division=np.nan)
    metrics = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "balanced_accuracy": float(balanced),
        "macro_recall": float(np.nanmean(recalls)),
        "per_class_recall": {c: _number(r) for c, r in zip(classes, recalls, strict=True)},
        "n": len(cur),
    }
    # Evidently shows the reference's quality beside the batch's when both are labelled.
    ref = _labelled(reference) if reference.labels is not None else pd.DataFrame()
    seen = set(cur[_LABEL]) | set(cur[_PREDICTED])
    ref_seen = set(ref[_LABEL]) | set(ref[_PREDICTED]) if len(ref) else set()
    if len(seen) == 2:
        # Evidently scores any data with exactly two labels as binary, with positive label 1
        # unless told (a KeyError for named classes): a two-class model, or a batch of two of
        # the classes. The positive class is the later one in the model's order.
        pos = max(seen, key=lambda c: (classes.index(c) if c in classes else len(classes), c))
        task = BinaryClassification(target=_LABEL, prediction_labels=_PREDICTED, pos_label=pos)
        keep_ref = ref_seen <= seen
    else:
        task = MulticlassClassification(target=_LABEL, prediction_labels=_PREDICTED)
        keep_ref = len(ref_seen) != 2  # a two-label reference would be scored as binary
    if not keep_ref:  # one task definition covers both datasets: the batch's wins
        ref = pd.DataFrame()
    definition = DataDefinition(categorical_columns=[_LABEL, _PREDICTED], classification=[task])
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
        {_LABEL: data.labels.to_numpy(), _PREDICTED: data.predictions[_PREDICTED].to_numpy()}
    )
    return table.dropna(subset=[_LABEL]).astype(str).reset_index(drop=True)


def _shares(predicted: pd.Series, classes: list[str]) -> dict[str, float]:
    counts = predicted.value_counts()
    return {c: float(counts.get(c, 0) / len(predicted)) for c in classes}


def _clean(column: dict) -> dict:
    return {
        "drifted": bool(column["drifted"]),
        "score": _number(column["score"]),
        "method": column["method"],
    }


def _number(value: float) -> float | None:
    # drift.json has no NaN: an undefined score (e.g. a constant column) is null there, and
    # the returned summary must equal the file.
    value = float(value)
    return value if np.isfinite(value) else None


def _header(summary: dict) -> str:
    counted = summary["counted_signals"]
    rows = []
    for name, signal in summary["signals"].items():
        state = "DRIFTED" if signal["drifted"] else "no drift"
        note = "" if name in counted else " (not counted in the verdict)"
        rows.append(f"<li><b>{name}</b>: {state}{note}; {html.escape(_detail(name, signal))}</li>")
    perf = summary["performance"]
    if perf is not None:
        rows.append(
            f"<li><b>performance</b> on {perf['n']} labelled images: accuracy "
            f"{perf['accuracy']:.3f}, balanced accuracy {perf['balanced_accuracy']:.3f}</li>"
        )
    verdict = "DRIFT DETECTED" if summary["drift_detected"] else "No drift detected"
    colour = "#b71c1c" if summary["drift_detected"] else "#1b5e20"
    base = {"drift_detected", "counted_signals", "signals", "performance"}
    facts = {k: v for k, v in summary.items() if k not in base and not isinstance(v, dict | list)}
    facts_text = ", ".join(f"{k}: {v}" for k, v in facts.items())
    return (
        '<div id="histoflow-verdict" style="font-family: sans-serif; margin: 16px 24px;">'
        f'<h1 style="color: {colour}; margin: 0 0 8px;">{verdict}</h1>'
        f"<p>{html.escape(facts_text)}</p><ul>{''.join(rows)}</ul></div>"
    )


def _detail(name: str, signal: dict) -> str:
    if name == "predictions":
        test, conf = signal["class_test"], signal["confidence"]
        return (
            f"class shares: {test['method']} {_fmt(test['score'])}"
            f"{' (drifted)' if test['drifted'] else ''}; mean confidence "
            f"{conf['reference_mean']:.3f} -> {conf['current_mean']:.3f}: {conf['method']} "
            f"{_fmt(conf['score'])}{' (drifted)' if conf['drifted'] else ''}"
        )
    drifted = [c for c, col in signal["columns"].items() if col["drifted"]]
    text = (
        f"{len(drifted)}/{len(signal['columns'])} columns drifted "
        f"(share {signal['share']:.2f}, threshold {signal['threshold']:.2f})"
    )
    if drifted:
        text += f": {', '.join(drifted)}"
    if signal["dropped_columns"]:
        text += f"; all-NaN, not compared: {', '.join(signal['dropped_columns'])}"
    return text


def _fmt(score: float | None) -> str:
    return "n/a" if score is None else f"{score:.3g}"


def _page(header: str, sections: list[tuple[str, Snapshot]]) -> str:
    # One Evidently page for several snapshots: the drift snapshots need the reference and
    # the performance one may not, so they can't be one Report. Snapshot has no public
    # accessor for its widgets; these are the ones Snapshot.get_html_str renders (0.7).
    widgets = []
    for title, snapshot in sections:
        widgets.append(header_text(label=title))
        widgets.append(group_widget(title="", widgets=snapshot._widgets))
        widgets.extend(snapshot._tests_widgets)
    page = render_widgets(widgets, as_iframe=False)
    # A plain-HTML verdict above Evidently's app: readable even before the scripts run.
    page, found = re.subn(
        r'(<body>\s*)(<div id="root_)', lambda m: m[1] + header + m[2], page, count=1
    )
    if not found:
        raise RuntimeError(
            "monitoring_report: Evidently's page has no <body> root to put the verdict in"
        )
    return page
