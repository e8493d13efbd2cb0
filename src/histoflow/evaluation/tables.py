"""The evaluation tables written from the metrics: predictions, the long summary, breakdowns.

Pure pandas over the dicts ``stages.evaluate`` builds; the stage writes what these return.
"""

from __future__ import annotations

import pandas as pd

from histoflow.metrics import HEADLINE, WORST_CASE

__all__ = ["eval_json", "long_breakdowns", "predictions", "row", "summary"]


def row(m: dict) -> dict:
    """One model's headline metrics and their CIs (a row of the ablation table)."""
    return {k: m[k] for k in HEADLINE} | {"ci": m["ci"]}


def predictions(table, probs, unc, classes, y_true, groups) -> pd.DataFrame:
    """predictions.csv: path, label, predicted, one probability per class, uncertainty, groups."""
    out = pd.DataFrame(
        {
            "path": table["path"],
            "label": table["label"],
            "predicted": [classes[i] for i in probs.argmax(1)],
        }
    )
    for i, name in enumerate(classes):
        out[f"prob_{name}"] = probs[:, i]
    out["uncertainty"] = unc
    for g in groups:
        out[g] = table[g]
    out["correct"] = probs.argmax(1) == y_true
    return out


def summary(metrics: dict) -> pd.DataFrame:
    """Long table: every model's headline metrics with CIs, then the fusion model per class."""
    rows = [
        {
            "model": model,
            "class": "",
            "metric": k,
            "value": a[k],
            "ci_low": a["ci"][k][0],
            "ci_high": a["ci"][k][1],
        }
        for model, a in metrics["ablations"].items()
        for k in HEADLINE
    ]
    rows += [
        {"model": "fusion", "class": c, "metric": k, "value": v[k], "ci_low": None, "ci_high": None}
        for c, v in metrics["per_class"].items()
        for k in ("precision", "recall", "f1", "auroc", "average_precision", "support")
    ]
    return pd.DataFrame(rows)


def long_breakdowns(breakdowns: dict) -> pd.DataFrame:
    """breakdowns.csv: one row per group column and value."""
    return pd.DataFrame(
        [
            {"column": c, "group": g, **r}
            for c, groups in breakdowns.items()
            for g, r in groups.items()
        ]
    )


def eval_json(metrics: dict, breakdowns: dict) -> dict:
    """evaluate.json's keys: the headline metrics, n, per class, by group, CIs, ablations..."""
    saved = {
        k: metrics[k]
        for k in (*HEADLINE, "n", "per_class", "by_group", "ci", "ablations", "bootstrap")
    }
    saved["per_class_recall"] = {c: v["recall"] for c, v in metrics["per_class"].items()}
    for optional in (
        "cross_group",
        "seed_spread",
        "grouped_cv",
        "robustness",
        WORST_CASE,
        "calibration",
        "conformal",
        "cases",
        "probes",
    ):
        if optional in metrics:
            saved[optional] = metrics[optional]
    saved["breakdowns"] = breakdowns  # for the report; breakdowns.csv holds it as a table
    return saved
