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
    machine: dict[str, str] | None = None,
    precision: dict[str, str] | None = None,
) -> str:
    """Markdown: data, classes, metrics with CIs, breakdowns, use, limits, reproducibility.

    Args:
        evaluation: ``metrics/evaluate.json`` (``ci``, ``by_group``, ``seed_spread`` optional).
        params: the run's parameters.
        manifest: the validated manifest (``label``, ``split``, optional ``patient_id``).
        git_commit: the code's commit.
        data_hash: the DVC hash of the data folder.
        machine: ``machine.*`` and ``package.*`` tags of the machine the run was registered on.
        precision: what each stage computed in (``train_encoder``: ``32-true``...), as recorded.
    """
    ci = evaluation.get("ci") or {}
    spread = evaluation.get("seed_spread") or {}
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
        "| metric | value | 95% CI |" + (" mean +- std over seeds |" if spread else ""),
        "|---|---|---|" + ("---|" if spread else ""),
    ]
    for name in HEADLINE:
        if name in evaluation:
            low_high = ci.get(name)
            interval = f"[{low_high[0]:.3f}, {low_high[1]:.3f}]" if low_high else "not computed"
            line = f"| {name} | {_num(evaluation[name])} | {interval} |"
            if spread and name in spread:
                line += f" {_num(spread[name]['mean'])} +- {_num(spread[name]['std'])} |"
            lines.append(line)
    if spread:
        lines += [
            "",
            f"Seeds {', '.join(map(str, spread['seeds']))}: the fusion head retrained with each "
            "on the same embeddings; their spread is the noise of one training run.",
        ]
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
    lines += _trust_lines(evaluation)
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
        *_reproducibility(params, git_commit, data_hash, machine or {}, precision or {}, spread),
    ]
    return "\n".join(lines)


def _reproducibility(
    params: Params,
    commit: str,
    data_hash: str | None,
    machine: dict[str, str],
    precision: dict[str, str],
    spread: dict,
) -> list[str]:
    """How to get this model's state back, and what a bit-for-bit reproduction must match."""
    metric = params.registry.metric
    rows = [
        ("CPU", machine.get("machine.cpu", "unknown")),
        ("CPU bf16 kernels", machine.get("machine.bf16", "unknown")),
        ("GPU", machine.get("machine.gpu", "none")),
        *((f"{stage} ran in", value) for stage, value in precision.items()),
        ("torch threads", machine.get("machine.torch_threads", "unknown")),
        *(
            (k.removeprefix("package."), v)
            for k, v in machine.items()
            if k in ("package.torch", "package.lightning", "package.timm", "package.numpy")
        ),
    ]
    noise = (
        f"the spread over seeds above ({metric} std {spread[metric]['std']:.3f}) is the size "
        "of that noise"
        if metric in spread
        else "set `evaluate.seeds` to measure the size of that noise"
    )
    return [
        "## Reproducibility",
        "",
        f"Code and params at commit `{commit}`, data `{params.data.root}` with DVC hash "
        f"`{data_hash or 'unknown'}`; seeds `train_encoder.seed` {params.train_encoder.seed}, "
        f"`train_fusion.seed` {params.train_fusion.seed}, `evaluate.seed` {params.evaluate.seed}. "
        "`histoflow registry status` names the commit whose `dvc.lock` holds this model's "
        "outputs: `git checkout <that commit> && dvc checkout` restores them, and `dvc repro "
        "--force` at it rebuilds them bit for bit on a machine like this one:",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
        "Another CPU's bf16 kernels (Intel AMX vs AVX-512 BF16) or a GPU give slightly different "
        f"weights and metrics; {noise}.",
        "",
    ]


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


def _trust_lines(evaluation: dict) -> list[str]:
    """Calibration, prediction sets and case-level results (#14), where evaluated."""
    lines = []
    cal = evaluation.get("calibration")
    if cal:
        lines += ["", f"### Calibration (temperature {cal['temperature']:.3f})", ""]
        lines += ["| metric | before | after |", "|---|---|---|"]
        lines += [
            f"| {k} | {_num(cal['before'][k])} | {_num(cal['after'][k])} |"
            for k in ("ece", "brier", "nll")
        ]
    conf = evaluation.get("conformal")
    if conf:
        lines += [
            "",
            f"### Prediction sets (alpha {conf['alpha']:g}: the true class in the set for at "
            f"least {conf['target']:.0%} of each class's tiles)",
            "",
            f"Coverage {_num(conf['coverage'])}, mean set size {_num(conf['mean_set_size'])}, "
            f"singletons {_num(conf['singleton_share'])}; per class: "
            + ", ".join(f"{c} {_num(v['coverage'])}" for c, v in conf["per_class"].items()),
        ]
    for column, c in (evaluation.get("cases") or {}).items():
        lines += [
            "",
            f"Per {column} ({c['n']} cases): recognition rate {_num(c['recognition_rate'])}, "
            f"accuracy {_num(c['accuracy'])}, macro recall {_num(c['macro_recall'])}.",
        ]
    return lines
