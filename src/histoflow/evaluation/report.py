"""The evaluation report: one HTML page a person opens in a browser, with its images beside it.

Everything the page shows is in its folder (``index.html`` and ``img/``), referenced by relative
paths, so the folder can be copied, attached to a run or served as it is.
"""

from __future__ import annotations

import html
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from histoflow.evaluation.groups import GROUP_METRICS
from histoflow.evaluation.robustness_report import robustness_section
from histoflow.io import atomic_dir
from histoflow.metrics import HEADLINE

__all__ = ["write_report"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
.ci { color: #777; font-size: 0.85em; }
.better { color: #1a7f37; font-weight: 600; } .worse { color: #b42318; font-weight: 600; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.3em 0; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; } .grid figure { margin: 0; }
iframe { width: 100%; height: 520px; border: 1px solid #ccc; }
"""


def write_report(
    out_dir: Path,
    metrics: dict,
    *,
    plots: Sequence[Path],
    panels: Sequence[dict],
    panels_dir: Path | None,
    caption_gallery: Path | None,
) -> Path:
    """Write ``out_dir/index.html`` (atomically, with its ``img/`` folder).

    Args:
        out_dir: the report folder (replaced as a whole).
        metrics: ``evaluate.json``'s content.
        plots: PNG files to show, copied into ``img/``.
        panels: explainability panels from :func:`~histoflow.evaluation.explain.write_panels`.
        panels_dir: the folder holding the panels' files.
        caption_gallery: ``reports/captions/gallery.html`` to link and embed, if it exists.
    """
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / "img").mkdir()
        for p in plots:
            shutil.copy(p, tmp / "img" / Path(p).name)
        for panel in panels:
            shutil.copy(Path(panels_dir) / panel["file"], tmp / "img" / panel["file"])
        gallery = None
        if caption_gallery is not None and Path(caption_gallery).is_file():
            # Relative to where the report will live, not to the temporary folder.
            gallery = os.path.relpath(Path(caption_gallery).resolve(), out_dir.resolve())
        body = [
            "<h1>histoflow evaluation</h1>",
            f"<p>Test split: {metrics['n']} images. Confidence intervals: 95% bootstrap "
            f"({metrics.get('bootstrap', '?')} resamples).</p>",
            _headline(metrics),
            _ablations(metrics.get("ablations", {})),
            _probes(metrics.get("probes")),
            _cross_group(metrics.get("cross_group")),
            robustness_section(metrics.get("robustness")),
            _per_class(metrics["per_class"]),
            _trust(metrics),
            _breakdowns(metrics.get("breakdowns", metrics.get("by_group", {}))),
            "<h2>Plots</h2>",
            *(
                f'<h3>{_e(Path(p).stem.replace("_", " "))}</h3><img src="img/{_e(Path(p).name)}" '
                f'alt="{_e(Path(p).stem)}">'
                for p in plots
            ),
            _panels(panels),
            _gallery(gallery),
        ]
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>histoflow evaluation</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
        )
        (tmp / "index.html").write_text(page, encoding="utf-8")
    return out_dir / "index.html"


def _e(text) -> str:
    return html.escape(str(text))


def _fmt(value, ci=None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    if ci and ci[0] is not None:
        text += f' <span class="ci">[{ci[0]:.3f}, {ci[1]:.3f}]</span>'
    return text


def _headline(m: dict) -> str:
    spread = m.get("seed_spread")
    rows = "".join(
        f"<tr><td>{k.replace('_', ' ')}</td><td>{_fmt(m.get(k), m.get('ci', {}).get(k))}</td>"
        + (f"<td>{_spread(spread[k])}</td>" if spread else "")
        + "</tr>"
        for k in HEADLINE
    )
    seeds_head, seeds_note = "", ""
    if spread:
        seeds = ", ".join(map(str, spread["seeds"]))
        seeds_head = "<th>mean &plusmn; std over seeds</th>"
        seeds_note = (
            f" Seeds: the fusion head retrained with seeds {_e(seeds)} on the same embeddings "
            "(the noise of one training run; the CI is the noise of the test sample)."
        )
    return (
        "<h2>Deployed model (cross-attention fusion)</h2>"
        f"<table><tr><th>metric</th><th>value [95% CI]</th>{seeds_head}</tr>{rows}</table>"
        f"<p>ece: expected calibration error (lower is better).{seeds_note}</p>"
    )


def _probes(probes: dict | None) -> str:
    """The encoder's frozen-feature probes, as ``histoflow probe``'s leaderboard shows them."""
    if not probes:
        return ""
    rows = "".join(
        f"<tr><td>{_e(name)}</td>"
        + "".join(
            f"<td>{r[m]:.3f} &plusmn; {r[m + '_std']:.3f}</td>"
            for m in ("macro_recall", "balanced_accuracy", "accuracy", "macro_f1")
        )
        + f"<td>{_e(' '.join(f'{v:.3f}' for v in r['per_seed_macro_recall']))}</td></tr>"
        for name, r in sorted(probes["results"].items(), key=lambda item: _probe_order(item[0]))
    )
    weights = "pretrained" if probes.get("pretrained") else "trained here"
    return (
        f"<h2>Encoder probes: frozen {_e(probes['encoder'])} features ({weights})</h2>"
        "<p>As eva and UNI compare encoders: a linear probe (logistic regression), kNN (cosine) "
        "and few-shot (SimpleShot, mean over episodes) on the pooled image embeddings, "
        f"{probes['n_fit']} train + val rows fitted and {probes['n_test']} test rows scored, "
        f"each over seeds {_e(', '.join(map(str, probes['seeds'])))} (mean &plusmn; std). "
        "Compare other encoders on the same split with <code>histoflow probe --encoder NAME "
        "--encoder outputs/train_encoder/model</code>.</p>"
        "<table><tr><th>probe</th><th>macro recall</th><th>balanced accuracy</th>"
        "<th>accuracy</th><th>macro F1</th><th>macro recall per seed</th></tr>"
        f"{rows}</table>"
    )


def _probe_order(name: str) -> tuple[int, int]:
    """linear, kNN, then few-shot by shots (evaluate.json's keys are sorted by name)."""
    kind = 0 if name == "linear" else 1 if name.startswith("knn") else 2
    return kind, int(name.rpartition("_")[2]) if kind == 2 else 0


def _spread(s: dict) -> str:
    return f"{s['mean']:.3f} &plusmn; {s['std']:.3f}"


def _ablations(ablations: dict) -> str:
    if not ablations:
        return "<h2>Ablations</h2><p>None trained (<code>train_fusion.ablations: []</code>).</p>"
    head = "".join(f"<th>{k.replace('_', ' ')}</th>" for k in HEADLINE)
    rows = []
    for name, a in ablations.items():
        cmp = a.get("fusion_vs_this")
        verdict = (
            "deployed model"
            if cmp is None
            else (
                f"{cmp['difference']:+.3f} {_fmt_ci(cmp['ci'])}: "
                f"<span class='{cmp['verdict'].split()[0]}'>fusion {cmp['verdict']}</span>"
            )
        )
        cells = "".join(f"<td>{_fmt(a.get(k), a.get('ci', {}).get(k))}</td>" for k in HEADLINE)
        rows.append(f"<tr><td>{_e(name)}</td>{cells}<td>{verdict}</td></tr>")
    return (
        "<h2>Ablations</h2><p>Same training recipe and test split; the last column is fusion's "
        "macro recall minus the variant's, with a paired bootstrap 95% CI (fusion better or worse "
        "only when the CI excludes 0).</p>"
        f"<table><tr><th>model</th>{head}<th>fusion minus model (macro recall)</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _fmt_ci(ci) -> str:
    return f'<span class="ci">[{ci[0]:+.3f}, {ci[1]:+.3f}]</span>'


def _cross_group(cg: dict | None) -> str:
    if not cg:
        return ""
    if "skipped" in cg:
        return f"<h2>Cross-group</h2><p>Skipped: {_e(cg['skipped'])}.</p>"
    head = "".join(f"<th>{k.replace('_', ' ')}</th>" for k in GROUP_METRICS)
    rows = "".join(
        f"<tr><td>{_e(g)}{' (in domain)' if r['in_domain'] else ''}</td><td>{r['n']}</td>"
        + "".join(f"<td>{_fmt(r.get(k), r['ci'].get(k))}</td>" for k in GROUP_METRICS)
        + "</tr>"
        for g, r in cg["groups"].items()
    )
    return (
        f"<h2>Cross-group: trained on {_e(cg['column'])} = {_e(cg['train_on'])}</h2>"
        f"<p>A fusion head with the deployed configuration, trained on the {cg['n_train']} "
        f"training images of {_e(cg['column'])} {_e(cg['train_on'])} only, tested on each group's "
        "test images.</p>"
        f"<table><tr><th>tested on</th><th>n</th>{head}</tr>{rows}</table>"
    )


def _per_class(per_class: dict) -> str:
    keys = ("precision", "recall", "f1", "auroc", "average_precision", "support")
    head = "".join(f"<th>{k.replace('_', ' ')}</th>" for k in keys)
    rows = "".join(
        f"<tr><td>{_e(c)}</td>"
        + "".join(f"<td>{v[k] if k == 'support' else _fmt(v[k])}</td>" for k in keys)
        + "</tr>"
        for c, v in per_class.items()
    )
    return f"<h2>Per class</h2><table><tr><th>class</th>{head}</tr>{rows}</table>"


def _breakdowns(by_group: dict) -> str:
    parts = ["<h2>Breakdowns</h2>"] if by_group else []
    head = "".join(f"<th>{k.replace('_', ' ')}</th>" for k in GROUP_METRICS)
    for column, groups in by_group.items():
        rows = "".join(
            f"<tr><td>{_e(g)}</td><td>{r['n']}</td>"
            + "".join(f"<td>{_fmt(r.get(k))}</td>" for k in GROUP_METRICS)
            + "</tr>"
            for g, r in groups.items()
        )
        table = f"<table><tr><th>{_e(column)}</th><th>n</th>{head}</tr>{rows}</table>"
        if len(groups) > 12:  # patients: many rows, folded
            table = f"<details><summary>{len(groups)} groups</summary>{table}</details>"
        parts.append(f"<h3>by {_e(column)}</h3>{table}")
    return "".join(parts)


def _panels(panels: Sequence[dict]) -> str:
    if not panels:
        return (
            "<h2>Explainability</h2><p>No panels (<code>evaluate.explain_per_class: 0</code>).</p>"
        )
    figures = "".join(
        f'<figure><img src="img/{_e(p["file"])}" alt="explanations for {_e(p["label"])}">'
        f"<figcaption>{_e(p['label'])}: {len(p['tiles'])} tiles</figcaption></figure>"
        for p in panels
    )
    return (
        "<h2>Explainability</h2><p>The most confident correct and wrong test tiles per true class. "
        "Grad-CAM (CNN encoders) targets the predicted class through the whole model: encoder, "
        "image tokens, fusion with the tile's caption, head-averaged logits. Attention rollout "
        "(ViT encoders) shows which patches reach the pooled token.</p>"
        f"<div class='grid'>{figures}</div>"
    )


def _gallery(rel: str | None) -> str:
    if rel is None:
        return ""
    return (
        f'<h2>Caption gallery</h2><p><a href="{_e(rel)}">Open the caption gallery</a></p>'
        f'<iframe src="{_e(rel)}" title="caption gallery"></iframe>'
    )


def _trust(m: dict) -> str:
    """Calibration before/after, conformal coverage and set sizes, case-level results (#14)."""
    parts = []
    cal = m.get("calibration")
    if cal:
        rows = "".join(
            f"<tr><td>{k}</td><td>{_fmt(cal['before'][k], cal['before']['ci'][k])}</td>"
            f"<td>{_fmt(cal['after'][k], cal['after']['ci'][k])}</td></tr>"
            for k in ("ece", "brier", "nll")
        )
        parts.append(
            f"<h2>Calibration (temperature {cal['temperature']:.3f})</h2><table><tr><th>metric"
            f"</th><th>before [95% CI]</th><th>after</th></tr>{rows}</table>"
            "<p>Lower is better. The deployed model serves the probabilities after.</p>"
        )
    conf = m.get("conformal")
    if conf:
        rows = "".join(
            f"<tr><td>{_e(c)}</td><td>{_fmt(v['coverage'], v['ci'])}</td><td>{v['n']}</td>"
            f"<td>{_fmt(v['mean_set_size'])}</td></tr>"
            for c, v in conf["per_class"].items()
        )
        parts.append(
            f"<h2>Prediction sets (alpha {conf['alpha']:g})</h2><p>Each image gets the set of "
            f"classes the model cannot rule out; the true class should be in it for at least "
            f"{conf['target']:.0%} of each class's images. Coverage "
            f"{_fmt(conf['coverage'], conf['coverage_ci'])}, mean set size "
            f"{_fmt(conf['mean_set_size'], conf['mean_set_size_ci'])}, singletons "
            f"{conf['singleton_share']:.1%}; {conf['empty_share']:.1%} would have been empty "
            "without the top class, which every set holds.</p><table><tr>"
            f"<th>class</th><th>coverage [95% Wilson CI]</th><th>n</th><th>mean set size</th>"
            f"</tr>{rows}</table>"
        )
    for column, c in (m.get("cases") or {}).items():
        keys = [k for k in ("recognition_rate", "accuracy", "macro_recall") if k in c]
        rows = "".join(
            f"<tr><td>{k.replace('_', ' ')}</td><td>{_fmt(c[k], c['ci'].get(k))}</td></tr>"
            for k in keys
        )
        parts.append(
            f"<h2>Per {_e(column)} ({c['n']} cases, {_e(c['method'])})</h2><table><tr><th>metric"
            f"</th><th>value [95% CI over cases]</th></tr>{rows}</table>"
        )
    return "".join(parts)
