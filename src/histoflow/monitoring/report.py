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
import re
from collections.abc import Sequence
from pathlib import Path

from evidently.core.metric_types import render_widgets
from evidently.core.report import Snapshot
from evidently.legacy.renderers.html_widgets import group_widget, header_text

from histoflow.config import MonitorConfig
from histoflow.io import atomic_path, write_json
from histoflow.monitoring.data import MonitorData, check_pair
from histoflow.monitoring.performance import performance
from histoflow.monitoring.signals import columns_drift, predictions_drift

__all__ = ["MonitorData", "monitoring_report", "too_few_images_report"]

_KEYS = (
    "verdict",
    "drift_detected",
    "counted_signals",
    "signals",
    "performance",
    "n_reference",
    "n_current",
)


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
        The summary written to ``drift.json``: ``verdict`` (``drift`` or ``no drift``),
        ``drift_detected``, ``counted_signals``,
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
    check_pair(reference, current, classes)

    features, features_snap = columns_drift(
        "features", reference.features, current.features, cfg, cfg.drift_share
    )
    embeddings, embeddings_snap = columns_drift(
        "embeddings", reference.embeddings, current.embeddings, cfg, cfg.embedding_drift_share
    )
    predictions, predictions_snap = predictions_drift(
        reference.predictions, current.predictions, cfg, classes
    )
    perf, performance_snap = performance(reference, current, classes)

    signals = {"features": features, "embeddings": embeddings, "predictions": predictions}
    drifted = any(signals[name]["drifted"] for name in cfg.signals)
    summary = {
        "verdict": "drift" if drifted else "no drift",
        "drift_detected": drifted,
        "counted_signals": list(cfg.signals),
        "signals": signals,
        "performance": perf,
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


def too_few_images_report(
    n_reference: int, current: MonitorData, cfg: MonitorConfig, out_dir: Path, extra: dict
) -> dict:
    """The report of a batch too small to judge: ``verdict: too few images``, no drift test.

    Below ``cfg.min_batch_size`` images the statistical tests say nothing (and a single image
    has no spread to test); ``drift_detected`` is None rather than a reassuring False.

    Returns:
        The summary written to ``drift.json``: ``verdict``, ``drift_detected`` (None),
        ``n_current``, ``min_batch_size``, ``n_reference`` and ``extra``'s keys.
    """
    n = len(current.predictions)
    summary = {
        "verdict": "too few images",
        "drift_detected": None,
        "counted_signals": list(cfg.signals),
        "signals": {},
        "performance": None,
        "n_reference": n_reference,
        "n_current": n,
        "min_batch_size": cfg.min_batch_size,
        **extra,
    }
    reason = (
        f"{n} classified image{'s' if n != 1 else ''}, fewer than monitor.min_batch_size = "
        f"{cfg.min_batch_size}: drift was not judged; add images to the batch, or lower "
        "monitor.min_batch_size"
    )
    summary["reason"] = reason
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "drift.html") as tmp:
        tmp.write_text(
            '<!doctype html><meta charset="utf-8"><title>drift: too few images</title>'
            '<div id="histoflow-verdict" style="font-family: sans-serif; margin: 16px 24px;">'
            f'<h1 style="color: #8d6e00;">Too few images</h1><p>{html.escape(reason)}</p></div>',
            encoding="utf-8",
        )
    write_json(out_dir / "drift.json", summary)
    return summary


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
    sets = summary.get("prediction_sets")
    if sets is not None:
        rows.append(f"<li><b>prediction sets</b>: {html.escape(_sets_detail(sets))}</li>")
    verdict = "DRIFT DETECTED" if summary["drift_detected"] else "No drift detected"
    colour = "#b71c1c" if summary["drift_detected"] else "#1b5e20"
    base = {"verdict", "drift_detected", "counted_signals", "signals", "performance"}
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


def _sets_detail(sets: dict) -> str:
    """Mean conformal set size against the reference's (wider sets: less certain), coverage."""
    text = f"mean size {sets['mean_set_size']:.2f}"
    if sets["ratio"] is not None:  # None without a reference size (or a zero one)
        text += f" (reference {sets['reference_mean_set_size']:.2f}, {sets['ratio']:.2f}x)"
    text += (
        f"; {sets['singleton_share']:.0%} single-class, {sets['empty_share']:.0%} empty"
        " (wider sets than the reference mean the model is less sure of this batch)"
    )
    if sets["coverage"] is not None:
        text += f"; coverage {sets['coverage']:.3f} on {sets['n_labelled']} labelled images"
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
