"""Stage ``evaluate``: the test split, scored with confidence intervals, explained and reported.

Writes ``metrics/eval.json`` (headline metrics with bootstrap CIs, per class, per group, the
ablation table and the cross-group table), ``predictions.csv``, ``summary.csv``, PNG plots, and
the HTML report ``reports/evaluation/index.html``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from histoflow.config import Params
from histoflow.evaluation import explain, plots
from histoflow.evaluation.groups import cross_group, group_breakdowns
from histoflow.evaluation.report import write_report
from histoflow.inference import ImageEmbedder, fuse
from histoflow.io import atomic_dir, atomic_path, write_json
from histoflow.metrics import (
    HEADLINE,
    bootstrap_ci,
    bootstrap_weights,
    classification_metrics,
    paired_difference,
)
from histoflow.models.ablations import load_classifier
from histoflow.stages._feature_store import load_features
from histoflow.stages.train_fusion import fusion_config

__all__ = ["PARAMS", "Inputs", "Outputs", "run"]

# train_fusion: the cross-group protocol trains a head with the deployed model's recipe.
PARAMS = ("evaluate", "data.group_columns", "train_fusion")


@dataclass(frozen=True)
class Inputs:
    data: Path = Path("data")
    features: Path = Path("outputs/embed")
    encoder: Path = Path("outputs/train_encoder/model")
    fusion: Path = Path("outputs/train_fusion/model")
    ablations: Path = Path("outputs/train_fusion/ablations")
    encoder_history: Path = Path("outputs/train_encoder/history.csv")
    fusion_history: Path = Path("outputs/train_fusion/history.csv")
    caption_gallery: Path = Path("reports/captions")


@dataclass(frozen=True)
class Outputs:
    metrics: Path = Path("metrics/eval.json")
    predictions: Path = Path("outputs/evaluate/predictions.csv")
    summary: Path = Path("outputs/evaluate/summary.csv")
    breakdowns: Path = Path("outputs/evaluate/breakdowns.csv")
    plots: Path = Path("outputs/evaluate/plots")
    report: Path = Path("reports/evaluation")


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Score the deployed model and its ablations on the test split; write metrics and report."""
    p = cfg.evaluate
    tensors, _, index = load_features(inputs.features)
    net, meta = load_classifier(inputs.fusion)
    classes = list(meta["classes"])
    test = (index["split"] == "test").to_numpy()
    if not test.any():
        raise ValueError(f"{inputs.features}/index.csv has no test rows; check data.test_fraction")
    table = index[test].reset_index(drop=True)
    y_true = np.array([classes.index(c) for c in table["label"]])
    weights = bootstrap_weights(len(y_true), p.bootstrap, p.seed)  # shared: paired comparisons

    probs, unc = _score(net, tensors, test, p.batch_size)
    metrics = classification_metrics(y_true, probs, classes, bins=p.ece_bins)
    metrics["ci"] = bootstrap_ci(y_true, probs, weights, bins=p.ece_bins)
    metrics["bootstrap"] = p.bootstrap

    ablations = {"fusion": _row(metrics)}
    for kind, folder in _ablation_folders(inputs.ablations):
        a_net, _ = load_classifier(folder)
        a_probs, _ = _score(a_net, tensors, test, p.batch_size)
        a = classification_metrics(y_true, a_probs, classes, bins=p.ece_bins)
        a["ci"] = bootstrap_ci(y_true, a_probs, weights, bins=p.ece_bins)
        ablations[kind] = _row(a) | {
            "fusion_vs_this": paired_difference(y_true, probs, a_probs, weights)
        }
    metrics["ablations"] = ablations

    groups = [g for g in cfg.data.group_columns if g in table]
    extra = [g for g in p.extra_group_columns if g in table and g not in groups]
    breakdowns = group_breakdowns(table, y_true, probs, groups + extra, bins=p.ece_bins)
    metrics["by_group"] = {g: breakdowns[g] for g in groups}
    if p.cross_group is not None:
        y_all = torch.tensor([classes.index(c) for c in index["label"]])
        metrics["cross_group"] = cross_group(
            p.cross_group,
            tensors,
            index,
            y_all,
            fusion_config(cfg, tensors, len(classes)),
            cfg.train_fusion,
            resamples=p.bootstrap,
            seed=p.seed,
            bins=p.ece_bins,
        )

    predictions = _predictions(table, probs, unc, classes, y_true, groups + extra)
    with atomic_path(outputs.predictions) as tmp:
        predictions.to_csv(tmp, index=False)
    with atomic_path(outputs.summary) as tmp:
        _summary(metrics).to_csv(tmp, index=False)
    with atomic_path(outputs.breakdowns) as tmp:
        _long_breakdowns(breakdowns).to_csv(tmp, index=False)

    pngs = _plots(metrics, y_true, probs, classes, inputs, outputs.plots, p.ece_bins)
    with tempfile.TemporaryDirectory(prefix="histoflow-explain-") as panel_dir:
        panels = _explain(cfg, inputs, net, meta, tensors, test, predictions, Path(panel_dir))
        saved = _eval_json(metrics, breakdowns)
        write_report(
            outputs.report,
            saved,
            plots=pngs,
            panels=panels,
            panels_dir=Path(panel_dir),
            caption_gallery=inputs.caption_gallery / "gallery.html",
        )
    result = {k: v for k, v in saved.items() if k != "breakdowns"}
    write_json(outputs.metrics, result)
    return result


def _score(net, tensors, rows: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    r = torch.from_numpy(rows)
    return fuse(
        net,
        tensors["image_tokens"][r],
        tensors["text_tokens"][r],
        tensors["text_mask"][r],
        batch_size,
    )


def _ablation_folders(folder: Path) -> list[tuple[str, Path]]:
    if not Path(folder).is_dir():
        return []
    return sorted((d.name, d) for d in Path(folder).iterdir() if (d / "model.json").is_file())


def _row(m: dict) -> dict:
    return {k: m[k] for k in HEADLINE} | {"ci": m["ci"]}


def _predictions(table, probs, unc, classes, y_true, groups) -> pd.DataFrame:
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


def _summary(metrics: dict) -> pd.DataFrame:
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


def _long_breakdowns(breakdowns: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"column": c, "group": g, **r}
            for c, groups in breakdowns.items()
            for g, r in groups.items()
        ]
    )


def _plots(metrics, y_true, probs, classes, inputs: Inputs, folder: Path, bins: int) -> list[Path]:
    """The PNGs, written into a fresh folder that replaces the old one only when all are done."""
    with atomic_dir(folder) as tmp:
        plots.plot_confusion_matrix(
            metrics["confusion_matrix"], classes, tmp / "confusion_matrix.png"
        )
        plots.plot_roc_pr(y_true, probs, classes, tmp / "roc_pr_curves.png")
        plots.plot_reliability(y_true, probs, tmp / "reliability.png", bins=bins)
        plots.plot_probability_histograms(
            y_true, probs, classes, tmp / "probability_histograms.png"
        )
        histories = {
            name: pd.read_csv(path)
            for name, path in (
                ("encoder", inputs.encoder_history),
                ("fusion", inputs.fusion_history),
                *((kind, d / "history.csv") for kind, d in _ablation_folders(inputs.ablations)),
            )
            if Path(path).is_file() and Path(path).stat().st_size > 1
        }
        if histories:
            plots.plot_training_curves(histories, tmp / "training_curves.png")
        names = sorted(f.name for f in tmp.glob("*.png"))
    order = ["confusion_matrix.png", "roc_pr_curves.png", "reliability.png"]
    names.sort(key=lambda n: (order.index(n) if n in order else len(order), n))
    return [folder / n for n in names]


def _explain(cfg, inputs, net, meta, tensors, test, predictions, out_dir: Path) -> list[dict]:
    """Grad-CAM / rollout panels for a few correct and wrong test tiles per class."""
    per_class = cfg.evaluate.explain_per_class
    if per_class == 0:
        return []
    tiles = explain.select_tiles(predictions, per_class)
    embedder = ImageEmbedder(inputs.encoder, int(meta["token_grid"]), precision="32")
    rows = np.flatnonzero(test)[tiles.index.to_numpy()]  # positions in the features index
    images = explain.load_tiles(inputs.data, tiles["path"].tolist(), embedder.transform)
    targets = [meta["classes"].index(c) for c in tiles["predicted"]]
    maps: list = []
    for s in tqdm(range(0, len(tiles), 16), desc="explain", unit="batch"):
        r = torch.from_numpy(rows[s : s + 16])
        batch = explain.explain_maps(
            embedder.encoder,
            net.to(embedder.device),
            int(meta["token_grid"]),
            images[s : s + 16].to(embedder.device),
            tensors["text_tokens"][r].to(embedder.device),
            tensors["text_mask"][r].to(embedder.device),
            targets[s : s + 16],
        )
        maps = (
            batch
            if not maps
            else [(n, np.concatenate([m0, m])) for (n, m0), (_, m) in zip(maps, batch, strict=True)]
        )
    return explain.write_panels(tiles, images, maps, embedder.transform, out_dir)


def _eval_json(metrics: dict, breakdowns: dict) -> dict:
    """eval.json's keys (interfaces.md): today's, plus average_precision, ece, ci, ablations..."""
    saved = {
        k: metrics[k]
        for k in (*HEADLINE, "n", "per_class", "by_group", "ci", "ablations", "bootstrap")
    }
    saved["per_class_recall"] = {c: v["recall"] for c, v in metrics["per_class"].items()}
    if "cross_group" in metrics:
        saved["cross_group"] = metrics["cross_group"]
    saved["breakdowns"] = breakdowns  # for the report; breakdowns.csv holds it as a table
    return saved
