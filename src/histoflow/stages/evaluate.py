"""Stage ``evaluate``: test-split metrics, predictions and plots for the trained fusion model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from histoflow.config import Params
from histoflow.evaluation.metrics import classification_metrics
from histoflow.evaluation.plots import plot_confusion_matrix, plot_training_curves
from histoflow.inference import fuse
from histoflow.io import atomic_path, write_json
from histoflow.models.checkpoint import load_fusion
from histoflow.stages.embed import load_features

__all__ = ["PARAMS", "Inputs", "Outputs", "run"]

PARAMS = ("evaluate", "data.group_columns")


@dataclass(frozen=True)
class Inputs:
    features: Path = Path("outputs/embed")
    fusion: Path = Path("outputs/train_fusion/model")
    encoder_history: Path = Path("outputs/train_encoder/history.csv")
    fusion_history: Path = Path("outputs/train_fusion/history.csv")


@dataclass(frozen=True)
class Outputs:
    metrics: Path = Path("metrics/eval.json")
    predictions: Path = Path("outputs/evaluate/predictions.csv")
    plots: Path = Path("outputs/evaluate/plots")


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Score the test split; write ``eval.json``, ``predictions.csv`` and PNG plots."""
    tensors, _, index = load_features(inputs.features)
    net, meta = load_fusion(inputs.fusion)
    classes = list(meta["classes"])
    test = (index["split"] == "test").to_numpy()
    if not test.any():
        raise ValueError(f"{inputs.features}/index.csv has no test rows; check data.test_fraction")
    rows = torch.from_numpy(test)
    probs, unc = fuse(
        net,
        tensors["image_tokens"][rows],
        tensors["text_tokens"][rows],
        tensors["text_mask"][rows],
        cfg.evaluate.batch_size,
    )
    table = index[test].reset_index(drop=True)
    y_true = np.array([classes.index(c) for c in table["label"]])
    metrics = classification_metrics(y_true, probs, classes)

    groups = [g for g in cfg.data.group_columns if g in table]
    correct = probs.argmax(1) == y_true
    metrics["by_group"] = {
        g: {
            str(v): {"accuracy": float(correct[m].mean()), "n": int(m.sum())}
            for v, m in (
                (v, (table[g] == v).to_numpy()) for v in sorted(table[g].dropna().unique())
            )
        }
        for g in groups
    }
    predictions = pd.DataFrame(
        {
            "path": table["path"],
            "label": table["label"],
            "predicted": [classes[i] for i in probs.argmax(1)],
        }
    )
    for i, name in enumerate(classes):
        predictions[f"prob_{name}"] = probs[:, i]
    predictions["uncertainty"] = unc
    for g in groups:
        predictions[g] = table[g]
    predictions["correct"] = predictions["label"] == predictions["predicted"]
    with atomic_path(outputs.predictions) as tmp:
        predictions.to_csv(tmp, index=False)

    outputs.plots.mkdir(parents=True, exist_ok=True)
    plot_confusion_matrix(
        metrics["confusion_matrix"], classes, outputs.plots / "confusion_matrix.png"
    )
    histories = {
        name: pd.read_csv(path)
        for name, path in (("encoder", inputs.encoder_history), ("fusion", inputs.fusion_history))
        if Path(path).is_file() and Path(path).stat().st_size > 1
    }
    if histories:
        plot_training_curves(histories, outputs.plots / "training_curves.png")
    per_class_recall = {c: v["recall"] for c, v in metrics["per_class"].items()}
    summary = {
        k: metrics[k]
        for k in ("accuracy", "balanced_accuracy", "macro_recall", "macro_f1", "auroc", "n")
    }
    summary["per_class_recall"] = per_class_recall
    summary["per_class"] = metrics["per_class"]
    summary["by_group"] = metrics["by_group"]
    write_json(outputs.metrics, summary)
    return summary
