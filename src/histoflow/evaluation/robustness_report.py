"""The robustness certificate in the evaluation report: a table and macro recall vs strength."""

from __future__ import annotations

import html
from pathlib import Path

from histoflow.io import atomic_path

__all__ = ["plot_robustness", "robustness_section"]

# The strength at which each perturbation does nothing: where its curve starts (clean).
_IDENTITY = {"stain": 0.0, "jpeg": 100.0, "blur": 0.0, "rescale": 1.0}
_AXIS = {
    "stain": "HED stain shift s",
    "jpeg": "JPEG quality",
    "blur": "Gaussian blur radius (px)",
    "rescale": "zoom factor",
}


def _curves(model_rows: dict) -> dict[str, list[tuple[float, dict]]]:
    """{perturbation: [(strength, row)...]} with the clean row at the identity strength."""
    clean = model_rows["clean"]
    return {
        kind: sorted(
            [(_IDENTITY.get(kind, 0.0), clean)] + [(float(s), r) for s, r in rows.items()],
            key=lambda c: c[0],
        )
        for kind, rows in model_rows.items()
        if kind != "clean"
    }


def plot_robustness(robustness: dict, path: Path) -> Path:
    """Macro recall vs strength, one panel per perturbation, one line per model (CI: fusion)."""
    from histoflow.evaluation.plots import plt  # matplotlib set up for files (Agg)

    models = robustness["models"]
    kinds = list(_curves(models["fusion"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.4 * len(kinds), 3.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for name, rows in models.items():
            xs, rs = zip(*_curves(rows)[kind], strict=True)
            ys = [r["macro_recall"] for r in rs]
            if name == "fusion":
                low = [
                    y - (r["ci"][0] if r["ci"][0] is not None else y)
                    for y, r in zip(ys, rs, strict=True)
                ]
                high = [
                    (r["ci"][1] if r["ci"][1] is not None else y) - y
                    for y, r in zip(ys, rs, strict=True)
                ]
                ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=name, lw=2)
            else:
                ax.plot(xs, ys, marker=".", label=name, alpha=0.8)
        ax.set(
            title=kind, xlabel=_AXIS.get(kind, "strength"), ylabel="macro recall", ylim=(0, 1.02)
        )
        if kind == "jpeg":
            ax.invert_xaxis()  # lower quality = stronger, to the right like the others
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def robustness_section(robustness: dict | None) -> str:
    """The report's HTML section: every condition's macro recall [95% CI] and drop, per model."""
    if not robustness:
        return ""
    models = robustness["models"]
    conditions = [("clean", None)] + [
        (kind, s) for kind, rows in models["fusion"].items() if kind != "clean" for s in rows
    ]
    head = "".join(f"<th>{html.escape(name)}</th>" for name in models)
    body = []
    for kind, s in conditions:
        cells = []
        for rows in models.values():
            r = rows["clean"] if kind == "clean" else rows[kind][s]
            ci = r["ci"]
            ci_text = (
                f' <span class="ci">[{ci[0]:.3f}, {ci[1]:.3f}]</span>' if ci[0] is not None else ""
            )
            drop = "" if kind == "clean" else f" ({r['drop']:+.3f})"
            cells.append(f"<td>{r['macro_recall']:.3f}{ci_text}{drop}</td>")
        label = "clean" if kind == "clean" else f"{kind} {s}"
        body.append(f"<tr><td>{html.escape(label)}</td>{''.join(cells)}</tr>")
    w = robustness["worst"]
    worst = "clean" if w["perturbation"] == "clean" else f"{w['perturbation']} {w['strength']}"
    return (
        "<h2>Robustness certificate</h2>"
        f"<p>The {robustness['n']} test images{_drawn(robustness)} perturbed (seeded), "
        "re-captioned and re-embedded "
        "through the deployed encoder, then scored by every model: macro recall [95% bootstrap "
        "CI] (drop from clean). Worst case of the deployed model: "
        f"<b>{w['macro_recall']:.3f}</b> under {html.escape(worst)}.</p>"
        f"<table><tr><th>condition</th>{head}</tr>{''.join(body)}</table>"
        '<img src="img/robustness.png" alt="macro recall vs perturbation strength">'
        + _held_out(robustness.get("leave_one_group_out"))
    )


def _held_out(logo: dict | None) -> str:
    """The leave-one-group-out table: each group scored by a head that never saw it."""
    if not logo:
        return ""
    column = html.escape(logo["column"])
    if "skipped" in logo:
        return f"<h3>Leave one {column} out</h3><p>Skipped: {html.escape(logo['skipped'])}.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(g)}</td><td>{r['n']}</td><td>{r['n_train']}</td>"
        f"<td>{r['macro_recall']:.3f}"
        + (
            f' <span class="ci">[{r["ci"][0]:.3f}, {r["ci"][1]:.3f}]</span>'
            if r["ci"][0] is not None
            else ""
        )
        + f"</td><td>{r['clean_macro_recall']:.3f}</td><td>{r['drop']:+.3f}</td></tr>"
        for g, r in logo["groups"].items()
    )
    return (
        f"<h3>Leave one {column} out</h3><p>A fusion head with the deployed configuration, "
        f"trained without the {column}'s images, scored on its test images; the drop is from "
        "the deployed model (trained on every group) on the same images.</p>"
        f"<table><tr><th>held out</th><th>n test</th><th>n train</th><th>macro recall [95% CI]</th>"
        f"<th>deployed model</th><th>drop</th></tr>{rows}</table>"
    )


def _drawn(robustness: dict) -> str:
    """How the certificate's images were chosen, when not all test images were perturbed."""
    if "drawn_from" not in robustness:
        return ""
    return (
        f" (a seeded draw, stratified by class, of the {robustness['drawn_from']}: "
        "<code>evaluate.robustness.max_images</code>)"
    )
