"""Stage ``train_fusion``: the cross-attention fusion classifier and its ablations.

All variants train on the cached embeddings from ``embed`` with the same recipe
(:func:`histoflow.training.fusion.fit_classifier`). The deployed model is the fusion network in
``outputs/train_fusion/model``; the ablations (``train_fusion.ablations``) go beside it in
``outputs/train_fusion/ablations/<kind>/`` so ``evaluate`` can put them side by side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from histoflow.config import Params
from histoflow.data.manifest import class_names
from histoflow.io import atomic_dir, atomic_path, write_json
from histoflow.stages import write_metrics

__all__ = ["PARAMS", "Inputs", "Outputs", "run"]

PARAMS = ("train_fusion",)


@dataclass(frozen=True)
class Inputs:
    """The feature store of ``embed``, and the tiles ``audit`` excludes from training."""

    features: Path = Path("outputs/embed")
    excluded: Path = Path("outputs/audit/excluded.csv")


@dataclass(frozen=True)
class Outputs:
    """The deployed fusion model, its curve, the ablations beside it, and metrics."""

    model: Path = Path("outputs/train_fusion/model")
    history: Path = Path("outputs/train_fusion/history.csv")
    ablations: Path = Path("outputs/train_fusion/ablations")
    metrics: Path = Path("metrics/train_fusion.json")


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Train on the train split, stop early on validation macro recall, keep the best epoch.

    Then calibrate the fusion model (:mod:`histoflow.training.calibrate`): the temperature on
    the val rows that stopped training, the conformal sets on the val patients held out of it.
    """
    # torch and Lightning load here, not at import: flows read Outputs without paying for them.
    from functools import partial

    import pandas as pd
    import torch

    from histoflow.embeddings.store import FeatureStore
    from histoflow.evaluation.label_audit import read_excluded
    from histoflow.models.ablations import create_classifier
    from histoflow.models.checkpoint import save_model
    from histoflow.models.fusion import FusionConfig
    from histoflow.training.calibrate import calibrate, calibration_rows
    from histoflow.training.fusion import FeatureRows, fit_classifier

    p = cfg.train_fusion
    store = FeatureStore(inputs.features)  # read batch by batch: memory does not grow with N
    index, meta = store.index, store.meta
    classes = class_names(index)
    y = torch.tensor([classes.index(c) for c in index["label"]])
    # Tiles whose labels the audit doubts, when audit.label_issues is exclude (else none).
    kept = ~index["path"].isin(read_excluded(inputs.excluded)).to_numpy()
    train = FeatureRows(store, y, (index["split"] == "train").to_numpy() & kept)
    # Part of val calibrates the conformal sets and so never steers training (calibrate.py).
    conformal = calibration_rows(index, p.calibration_share, p.seed)
    early_stop = (index["split"] == "val").to_numpy() & ~conformal & kept
    val = FeatureRows(store, y, early_stop)
    net_cfg = FusionConfig.from_params(p, num_classes=len(classes), **store.dims())
    description = {
        "config": net_cfg.to_dict(),
        "classes": classes,
        "text_model": meta["text_model"],
        "max_text_tokens": int(meta["max_text_tokens"]),
        "token_grid": int(meta["token_grid"]),
        "captioner": json.loads(meta["captioner"]),
        # The precision embed ran at (bf16 features differ from float32 ones): the card says.
        "features_precision": {
            "image": meta.get("image_precision", "unknown"),
            "text": meta.get("text_precision", "unknown"),
        },
    }

    results = {}
    for kind in ("fusion", *p.ablations):
        # Built inside, after seeding: each variant starts from the seed, whatever ran before.
        results[kind] = fit_classifier(partial(create_classifier, kind, net_cfg), train, val, p)
    if not results["fusion"].is_global_zero:  # strategy ddp under torchrun: rank 0 writes
        return {}

    # Ablations first: if the fusion model's write failed, the last good model stays in place.
    with atomic_dir(outputs.ablations) as tmp:
        for kind in p.ablations:
            save_model(tmp / kind, results[kind].net, {**description, "kind": kind})
            pd.DataFrame(results[kind].history).to_csv(tmp / kind / "history.csv", index=False)
        write_json(tmp / "ablations.json", {"ablations": list(p.ablations)})
    fused = results["fusion"]
    calibration, calibrated = calibrate(fused.net, store, y, early_stop, conformal, p.alpha)
    save_model(
        outputs.model,
        fused.net,
        {**description, "kind": "fusion", "calibration": calibration.to_dict()},
    )
    with atomic_path(outputs.history) as tmp:
        pd.DataFrame(fused.history).to_csv(tmp, index=False)
    metrics = {
        "best_val_macro_recall": fused.best_val_macro_recall,
        "epochs_run": fused.epochs_run,
        "excluded_by_audit": int((~kept).sum()),
        "calibration": calibrated,
        "ablations": {
            kind: {
                "best_val_macro_recall": results[kind].best_val_macro_recall,
                "epochs_run": results[kind].epochs_run,
            }
            for kind in p.ablations
        },
    }
    write_metrics(outputs.metrics, metrics, copy_in=outputs.model)
    return metrics
