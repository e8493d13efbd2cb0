"""The model card: a markdown page registered with every model version."""

from __future__ import annotations

import pandas as pd

from histoflow.config import Params

__all__ = ["render_model_card"]

HEADLINE = ("macro_recall", "balanced_accuracy", "accuracy", "macro_f1", "auroc")


def render_model_card(
    evaluation: dict,
    params: Params,
    manifest: pd.DataFrame,
    *,
    git_commit: str = "unknown",
    data_hash: str | None = None,
) -> str:
    """Markdown: data, classes, metrics with CIs, per-class and per-group breakdowns, use, limits.

    Args:
        evaluation: ``metrics/evaluate.json`` (``ci`` and ``by_group`` are optional).
        params: the run's parameters.
        manifest: the validated manifest (``label``, ``split``, optional ``patient_id``).
        git_commit: the code's commit.
        data_hash: the DVC hash of the data folder.
    """
    ci = evaluation.get("ci") or {}
    classes = sorted(evaluation.get("per_class_recall", {}))
    lines = [
        f"# Model card: {params.registry.model_name}",
        "",
        "## Model",
        "",
        f"Encoder `{params.train_encoder.backbone}` (pretrained: {params.train_encoder.pretrained}) "
        f"at {params.data.image_size} px; caption backend `{params.captions.backend}`; "
        f"cross-attention fusion ({params.train_fusion.layers} layers, width "
        f"{params.train_fusion.width}) with {params.train_fusion.classifier_heads} classifier heads "
        "whose disagreement is the reported uncertainty. Code at commit "
        f"`{git_commit}`.",
        "",
        "## Data",
        "",
        f"`{params.data.root}` (DVC hash `{data_hash or 'unknown'}`), {len(manifest)} images"
        + (f" from {manifest['patient_id'].nunique()} patients" if "patient_id" in manifest else "")
        + ".",
        "",
        _table(pd.crosstab(manifest["label"], manifest["split"]).reset_index()),
        "",
        f"## Classes\n\n{', '.join(classes) if classes else '(none recorded)'}",
        "",
        f"## Test metrics (n = {evaluation.get('n', '?')}; 95% bootstrap CI where computed)",
        "",
        "| metric | value | 95% CI |",
        "|---|---|---|",
    ]
    for name in HEADLINE:
        if name in evaluation:
            low_high = ci.get(name)
            interval = f"[{low_high[0]:.3f}, {low_high[1]:.3f}]" if low_high else "not computed"
            lines.append(f"| {name} | {_num(evaluation[name])} | {interval} |")
    per_class = evaluation.get("per_class") or {
        c: {"recall": r} for c, r in evaluation.get("per_class_recall", {}).items()
    }
    if per_class:
        cols = sorted({k for v in per_class.values() for k in v})
        lines += ["", "### Per class", "", "| class | " + " | ".join(cols) + " |"]
        lines.append("|---" * (len(cols) + 1) + "|")
        lines += [
            f"| {c} | " + " | ".join(_num(v.get(k)) for k in cols) + " |"
            for c, v in sorted(per_class.items())
        ]
    for group, values in (evaluation.get("by_group") or {}).items():
        lines += ["", f"### By {group}", "", "| value | accuracy | n |", "|---|---|---|"]
        lines += [
            f"| {v} | {_num(m.get('accuracy'))} | {m.get('n', '?')} |"
            for v, m in sorted(values.items())
        ]
    lines += [
        "",
        "## Intended use",
        "",
        params.registry.intended_use,
        "",
        "## Limits",
        "",
        *(f"- {limit}" for limit in _limits(evaluation, params)),
        "",
    ]
    return "\n".join(lines)


def _limits(evaluation: dict, params: Params) -> list[str]:
    limits = [
        "Judged on one held-out test split of the same data source; performance on other "
        "scanners, stains or sites is unknown until monitoring reports on them.",
        "Inputs must be tiles like the training data (resized to "
        f"{params.data.image_size} px); whole slides are not tiled by the model.",
    ]
    n = evaluation.get("n")
    if isinstance(n, int) and n < 200:
        limits.append(f"The test split is small (n = {n}): metrics are uncertain.")
    if not evaluation.get("ci"):
        limits.append("No confidence intervals were computed for this evaluation.")
    weak = [c for c, r in evaluation.get("per_class_recall", {}).items() if r < 0.7]
    if weak:
        limits.append(f"Recall below 0.7 for: {', '.join(sorted(weak))}.")
    for group, values in (evaluation.get("by_group") or {}).items():
        few = [v for v, m in values.items() if m.get("n", 0) < 20]
        if few:
            limits.append(f"Fewer than 20 test images for {group} = {', '.join(sorted(few))}.")
    return limits


def _num(value) -> str:
    if isinstance(value, int | float):
        return "n/a" if value != value else f"{value:.3f}"
    return "n/a" if value is None else str(value)


def _table(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|---" * len(frame.columns) + "|"
    rows = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows])
