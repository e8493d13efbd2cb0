"""Stage ``evaluate``: the test split, scored with confidence intervals, explained and reported.

Writes ``metrics/evaluate.json`` (headline metrics with bootstrap CIs, per class, per group, the
ablation table and the cross-group table), ``predictions.csv``, ``summary.csv``, PNG plots, and
the HTML report ``reports/evaluate/index.html``.

torch, grad-cam and matplotlib load when the stage runs, not at import: flows read this
module's ``Outputs`` without paying for them. Each optional protocol (cross-group, seed spread,
robustness, grouped CV, calibration and conformal sets, cases, encoder probes) is a short
adapter here from params and the feature store to its module in ``histoflow.evaluation``; the
tables written from the metrics are ``histoflow.evaluation.tables``. That is why the module is
over 400 lines: one stage, one module, with eight protocols' adapters (params in, the module's
call, the cost logged), while each protocol's own code lives in its ``histoflow.evaluation``
module.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from histoflow.config import Params, ProbesConfig
from histoflow.embeddings.store import FeatureStore
from histoflow.evaluation import tables
from histoflow.evaluation.cases import case_results
from histoflow.evaluation.groups import cross_group_home, cross_group_scores, group_breakdowns
from histoflow.evaluation.report import write_report
from histoflow.io import atomic_path
from histoflow.metrics import (
    WORST_CASE,
    BootstrapWeights,
    bootstrap_ci,
    classification_metrics,
    paired_difference,
)
from histoflow.stages import write_metrics

__all__ = ["PARAMS", "Inputs", "Outputs", "run"]

# train_fusion: the cross-group protocol trains a head with the deployed model's recipe.
PARAMS = ("evaluate", "data.group_columns", "train_fusion")


@dataclass(frozen=True)
class Inputs:
    """The images (for explanation panels), the features and every trained model."""

    data: Path = Path("data")
    features: Path = Path("outputs/embed")
    encoder: Path = Path("outputs/train_encoder/model")
    fusion: Path = Path("outputs/train_fusion/model")
    ablations: Path = Path("outputs/train_fusion/ablations")
    encoder_history: Path = Path("outputs/train_encoder/history.csv")
    fusion_history: Path = Path("outputs/train_fusion/history.csv")
    caption_gallery: Path = Path("reports/captions")
    cases: Path = Path("outputs/audit/cases.csv")  # inferred cases, for evaluate.cv_folds


@dataclass(frozen=True)
class Outputs:
    """Metrics, predictions and tables, plots and the report."""

    metrics: Path = Path("metrics/evaluate.json")
    predictions: Path = Path("outputs/evaluate/predictions.csv")
    summary: Path = Path("outputs/evaluate/summary.csv")
    breakdowns: Path = Path("outputs/evaluate/breakdowns.csv")
    plots: Path = Path("outputs/evaluate/plots")
    report: Path = Path("reports/evaluate")
    # Calibration and conformal plots, case-level tables (evaluation/calibration.py, cases.py).
    trust: Path = Path("outputs/evaluate/trust")


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Score the deployed model and its ablations on the test split; write metrics and report."""
    import torch

    from histoflow.evaluation.plots import write_plots
    from histoflow.models.ablations import load_classifier
    from histoflow.models.calibration import Calibration

    p = cfg.evaluate
    tensors = FeatureStore(inputs.features)  # read batch by batch, never whole
    index = tensors.index
    net, meta = load_classifier(inputs.fusion)
    classes = list(meta["classes"])
    test = (index["split"] == "test").to_numpy()
    if not test.any():
        raise ValueError(f"{inputs.features}/index.csv has no test rows; check data.test_fraction")
    table = index[test].reset_index(drop=True)
    y_true = np.array([classes.index(c) for c in table["label"]])
    # Shared by the paired comparisons; drawn in blocks, so memory stays flat in the test size.
    weights = BootstrapWeights(len(y_true), p.bootstrap, p.seed)

    # The deployed probabilities are the calibrated ones: every metric below scores those.
    calibration = Calibration.from_meta(meta)
    probs, unc = _score(net, tensors, test, p.batch_size, calibration.temperature)
    metrics = classification_metrics(y_true, probs, classes, bins=p.ece_bins)
    metrics["ci"] = bootstrap_ci(y_true, probs, weights, bins=p.ece_bins)
    metrics["bootstrap"] = p.bootstrap

    ablations = {"fusion": tables.row(metrics)}
    for kind, folder in _ablation_folders(inputs.ablations):
        a_net, _ = load_classifier(folder)
        a_probs, _ = _score(a_net, tensors, test, p.batch_size)
        a = classification_metrics(y_true, a_probs, classes, bins=p.ece_bins)
        a["ci"] = bootstrap_ci(y_true, a_probs, weights, bins=p.ece_bins)
        ablations[kind] = tables.row(a) | {
            "fusion_vs_this": paired_difference(y_true, probs, a_probs, weights)
        }
    metrics["ablations"] = ablations

    groups = [g for g in cfg.data.group_columns if g in table]
    extra = [g for g in p.extra_group_columns if g in table and g not in groups]
    breakdowns = group_breakdowns(table, y_true, probs, groups + extra, bins=p.ece_bins)
    metrics["by_group"] = {g: breakdowns[g] for g in groups}
    if p.cross_group is not None:
        y_all = torch.tensor([classes.index(c) for c in index["label"]])
        metrics["cross_group"] = _cross_group(cfg, tensors, index, y_all, len(classes))
    if p.seeds:
        metrics["seed_spread"] = _seed_spread(cfg, tensors, index, classes)
    if p.robustness is not None:
        from histoflow.evaluation.robustness import worst_case

        metrics["robustness"] = _robustness(cfg, inputs, table, y_true, weights)
        if p.robustness.leave_one_group_out:
            metrics["robustness"]["leave_one_group_out"] = _leave_one_group_out(
                cfg, tensors, index, classes, probs
            )
        metrics["robustness"]["worst"] = worst_case(
            metrics["robustness"]["models"]["fusion"],
            metrics["robustness"].get("leave_one_group_out"),
        )
        metrics[WORST_CASE] = metrics["robustness"]["worst"]["macro_recall"]
    if p.cv_folds:
        metrics["grouped_cv"] = _grouped_cv(cfg, inputs.cases, tensors, index, classes)
    if p.probes is not None:
        metrics["probes"] = _probes(p.probes, inputs.encoder, tensors, index, classes)

    predictions = tables.predictions(table, probs, unc, classes, y_true, groups + extra)
    trust_pngs = _trust(
        outputs.trust,
        metrics,
        predictions,
        calibration,
        (net, tensors, test),
        y_true,
        probs,
        classes,
        weights,
        p,
    )
    # After the plots: they replace the trust folder as a whole.
    metrics["cases"] = case_results(outputs.trust, table, probs, classes, p)
    with atomic_path(outputs.predictions) as tmp:
        predictions.to_csv(tmp, index=False)
    with atomic_path(outputs.summary) as tmp:
        tables.summary(metrics).to_csv(tmp, index=False)
    with atomic_path(outputs.breakdowns) as tmp:
        tables.long_breakdowns(breakdowns).to_csv(tmp, index=False)

    pngs = write_plots(
        outputs.plots,
        metrics["confusion_matrix"],
        y_true,
        probs,
        classes,
        _histories(inputs),
        bins=p.ece_bins,
    )
    if "robustness" in metrics:
        from histoflow.evaluation.robustness_report import plot_robustness

        # Copied with the other plots; the report's robustness section shows it.
        plot_robustness(metrics["robustness"], outputs.plots / "robustness.png")
        pngs = [*pngs, outputs.plots / "robustness.png"]
    with tempfile.TemporaryDirectory(prefix="histoflow-explain-") as panel_dir:
        panels = []
        if cfg.evaluate.explain_per_class:  # grad-cam and the encoder load only when asked
            from histoflow.evaluation.explain import explain_test_tiles

            panels = explain_test_tiles(
                inputs.encoder,
                inputs.data,
                net,
                meta,
                tensors,
                np.flatnonzero(test),
                predictions,
                per_class=cfg.evaluate.explain_per_class,
                out_dir=Path(panel_dir),
            )
        saved = tables.eval_json(metrics, breakdowns)
        write_report(
            outputs.report,
            saved,
            plots=pngs + trust_pngs,
            panels=panels,
            panels_dir=Path(panel_dir),
            caption_gallery=inputs.caption_gallery / "gallery.html",
        )
    result = {k: v for k, v in saved.items() if k != "breakdowns"}
    write_metrics(outputs.metrics, result, copy_in=outputs.report)
    return result


def _cross_group(
    cfg: Params, tensors: FeatureStore, index: pd.DataFrame, y_all, num_classes: int
) -> dict:
    """The cross-group protocol: a fusion head trained on one group, scored on every group."""
    from functools import partial

    from histoflow.models.ablations import create_classifier
    from histoflow.models.fusion import FusionConfig
    from histoflow.training.fusion import fit_on_group

    spec, p = cfg.evaluate.cross_group, cfg.evaluate
    home = cross_group_home(spec, index)
    if isinstance(home, str):
        return {"column": spec.column, "skipped": home}
    net_cfg = FusionConfig.from_params(cfg.train_fusion, num_classes=num_classes, **tensors.dims())
    split = index["split"].to_numpy()
    build = partial(create_classifier, "fusion", net_cfg)
    net = fit_on_group(build, tensors, y_all, split, home, cfg.train_fusion).net
    test = split == "test"
    probs, _ = _score(net, tensors, test, p.batch_size)
    return {
        "column": spec.column,
        "train_on": spec.train_on,
        "n_train": int((home & (split == "train")).sum()),
        "groups": cross_group_scores(
            index.loc[test, spec.column],
            y_all[test].numpy(),
            probs,
            spec.train_on,
            resamples=p.bootstrap,
            seed=p.seed,
            bins=p.ece_bins,
        ),
    }


def _robustness(cfg: Params, inputs: Inputs, table: pd.DataFrame, y_true, weights) -> dict:
    """The robustness certificate of the fusion model and its ablations (worst case: fusion's)."""
    from functools import partial

    from histoflow.data.images import load_rgb
    from histoflow.evaluation.probes import stratified_draw
    from histoflow.evaluation.robustness import certificate
    from histoflow.inference import Predictor, fuse
    from histoflow.models.ablations import load_classifier

    p = cfg.evaluate.robustness
    started = time.perf_counter()
    test_images = len(table)
    if p.max_images is not None and len(table) > p.max_images:
        # A seeded draw stratified by class: every class keeps its share of the test split.
        drawn = stratified_draw(y_true, p.max_images, p.seed)
        table, y_true = table.iloc[drawn].reset_index(drop=True), y_true[drawn]
        weights = BootstrapWeights(len(y_true), cfg.evaluate.bootstrap, cfg.evaluate.seed)
    predictor = Predictor.from_folders(inputs.encoder, inputs.fusion)
    models = {"fusion": predictor.fusion}
    models |= {kind: load_classifier(d)[0] for kind, d in _ablation_folders(inputs.ablations)}
    paths = table["path"].tolist()
    limit = predictor.embedder.max_pixels
    result = certificate(
        predictor.tokens,
        {
            name: partial(fuse, net, batch_size=cfg.evaluate.batch_size)
            for name, net in models.items()
        },
        lambda i: load_rgb(Path(inputs.data) / paths[i], max_pixels=limit),
        y_true,
        p.conditions(),
        weights=weights,
        seed=p.seed,
        batch_size=p.batch_size,
    )
    # The cost goes to the log, not evaluate.json (which must reproduce bit for bit).
    print(
        f"evaluate: robustness certificate, {len(paths)} test images x "
        f"{len(p.conditions()) + 1} conditions re-embedded in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return result | {"drawn_from": test_images} if len(paths) < test_images else result


def _leave_one_group_out(cfg: Params, tensors, index, classes, clean_probs) -> dict:
    """Heads trained without each group of ``evaluate.robustness.leave_one_group_out``."""
    import torch

    from histoflow.evaluation.leave_one_out import leave_one_group_out
    from histoflow.models.fusion import FusionConfig

    net_cfg = FusionConfig.from_params(cfg.train_fusion, num_classes=len(classes), **tensors.dims())
    return leave_one_group_out(
        tensors,
        index,
        torch.tensor([classes.index(c) for c in index["label"]]),
        cfg.evaluate.robustness.leave_one_group_out,
        clean_probs,
        net_cfg,
        cfg.train_fusion,
        resamples=cfg.evaluate.bootstrap,
        seed=cfg.evaluate.seed,
        batch_size=cfg.evaluate.batch_size,
    )


def _seed_spread(
    cfg: Params, tensors: FeatureStore, index: pd.DataFrame, classes: list[str]
) -> dict:
    """The deployed configuration retrained with each of ``evaluate.seeds``: mean and std."""
    from histoflow.evaluation.seeds import seed_spread
    from histoflow.models.fusion import FusionConfig

    net_cfg = FusionConfig.from_params(cfg.train_fusion, num_classes=len(classes), **tensors.dims())
    p = cfg.evaluate
    return seed_spread(
        tensors,
        index,
        classes,
        net_cfg,
        cfg.train_fusion,
        p.seeds,
        batch_size=p.batch_size,
        bins=p.ece_bins,
    )


def _grouped_cv(cfg: Params, cases: Path, tensors: FeatureStore, index, classes: list[str]) -> dict:
    """The fusion recipe cross-validated in ``evaluate.cv_folds`` folds grouped by case."""
    from histoflow.data.quality.cases import case_groups, read_cases
    from histoflow.evaluation.fusion_cv import fusion_grouped_cv
    from histoflow.models.fusion import FusionConfig

    groups, source = case_groups(index, read_cases(cases))
    net_cfg = FusionConfig.from_params(cfg.train_fusion, num_classes=len(classes), **tensors.dims())
    p = cfg.evaluate
    cv = fusion_grouped_cv(
        tensors,
        index,
        classes,
        net_cfg,
        cfg.train_fusion,
        groups,
        folds=p.cv_folds,
        seed=p.seed,
        batch_size=p.batch_size,
        bins=p.ece_bins,
    )
    return {"grouped_by": source, **cv}


def _probes(
    p: ProbesConfig, encoder: Path, tensors: FeatureStore, index: pd.DataFrame, classes
) -> dict:
    """The encoder's frozen pooled features probed as the field compares encoders (#13)."""
    from histoflow.evaluation.probes import probe_store
    from histoflow.models.checkpoint import read_model_json

    started = time.perf_counter()
    result = probe_store(tensors, index, classes, p)
    # The cost goes to the log, not evaluate.json (which must reproduce bit for bit).
    print(
        f"evaluate: probes on {result['n_fit']} + {result['n_test']} frozen embeddings in "
        f"{time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    model = read_model_json(encoder)  # what the features came from
    described = {"encoder": model.get("backbone", "?"), "pretrained": bool(model.get("pretrained"))}
    return described | result


def _trust(folder, metrics, predictions, calibration, scored, y, probs, classes, weights, p):
    """Calibration before/after and the conformal sets' coverage (#14): metrics, columns, plots."""
    from histoflow.evaluation.calibration import (
        calibration_metrics,
        conformal_metrics,
        write_calibration_plots,
    )
    from histoflow.models.calibration import set_labels

    raw, _ = _score(*scored, p.batch_size)  # temperature 1: the probabilities before calibration
    metrics["calibration"] = calibration_metrics(
        y, raw, probs, weights, temperature=calibration.temperature, bins=p.ece_bins
    )
    conformal = None
    if calibration.has_sets:
        in_set = calibration.prediction_sets(probs)
        empty = ~calibration.prediction_sets(probs, nonempty=False).any(1)
        conformal = conformal_metrics(y, in_set, classes, calibration.alpha, weights, empty=empty)
        metrics["conformal"] = conformal
        predictions["prediction_set"] = set_labels(in_set, classes)
        predictions["set_size"] = in_set.sum(1)
        predictions["covered"] = in_set[np.arange(len(y)), y]
    return write_calibration_plots(folder, y, raw, probs, conformal, bins=p.ece_bins)


def _score(
    net, tensors, rows: np.ndarray, batch_size: int, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    from histoflow.evaluation.scoring import score_rows

    return score_rows(net, tensors, rows, batch_size, temperature)


def _ablation_folders(folder: Path) -> list[tuple[str, Path]]:
    if not Path(folder).is_dir():
        return []
    return sorted((d.name, d) for d in Path(folder).iterdir() if (d / "model.json").is_file())


def _histories(inputs: Inputs) -> dict[str, pd.DataFrame]:
    """Every model's training curve that exists (an empty CSV has none)."""
    paths = (
        ("encoder", inputs.encoder_history),
        ("fusion", inputs.fusion_history),
        *((kind, d / "history.csv") for kind, d in _ablation_folders(inputs.ablations)),
    )
    return {
        name: pd.read_csv(path)
        for name, path in paths
        if Path(path).is_file() and Path(path).stat().st_size > 1
    }
