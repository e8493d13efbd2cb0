"""Stage ``train_fusion``: the cross-attention fusion classifier, trained on cached embeddings."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from histoflow.config import Params
from histoflow.io import atomic_path, write_json
from histoflow.models.checkpoint import save_model
from histoflow.models.fusion import FusionConfig, FusionNet
from histoflow.models.lightning import FusionClassifier, History
from histoflow.stages._tables import class_names
from histoflow.stages.embed import load_features

__all__ = ["PARAMS", "Inputs", "Outputs", "run"]

PARAMS = ("train_fusion",)


@dataclass(frozen=True)
class Inputs:
    features: Path = Path("outputs/embed")


@dataclass(frozen=True)
class Outputs:
    model: Path = Path("outputs/train_fusion/model")
    history: Path = Path("outputs/train_fusion/history.csv")
    metrics: Path = Path("metrics/train_fusion.json")


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Train on the train split, stop early on validation macro recall, keep the best epoch."""
    p = cfg.train_fusion
    L.seed_everything(p.seed, verbose=False)
    tensors, meta, index = load_features(inputs.features)
    classes = class_names(index)
    y = torch.tensor([classes.index(c) for c in index["label"]])

    def split(name: str) -> TensorDataset:
        rows = torch.from_numpy((index["split"] == name).to_numpy())
        return TensorDataset(
            tensors["image_tokens"][rows].float(),
            tensors["text_tokens"][rows].float(),
            tensors["text_mask"][rows],
            y[rows],
        )

    fusion_cfg = FusionConfig(
        image_dim=tensors["image_tokens"].shape[2],
        text_dim=tensors["text_tokens"].shape[2],
        image_tokens=tensors["image_tokens"].shape[1],
        num_classes=len(classes),
        width=p.width,
        layers=p.layers,
        heads=p.heads,
        dropout=p.dropout,
        classifier_heads=p.classifier_heads,
    )
    module = FusionClassifier(
        FusionNet(fusion_cfg), len(classes), lr=p.lr, weight_decay=p.weight_decay, epochs=p.epochs
    )
    history = History()
    with tempfile.TemporaryDirectory(prefix="histoflow-fusion-") as ckpt_dir:
        best = ModelCheckpoint(
            dirpath=ckpt_dir, monitor="val_macro_recall", mode="max", save_top_k=1, filename="best"
        )
        stop = EarlyStopping(monitor="val_macro_recall", mode="max", patience=p.patience)
        trainer = L.Trainer(
            max_epochs=p.epochs,
            accelerator="auto",
            devices=1,
            logger=False,
            callbacks=[best, stop, history],
            enable_model_summary=False,
            num_sanity_val_steps=0,
            enable_progress_bar=False,
        )
        trainer.fit(
            module,
            DataLoader(split("train"), batch_size=p.batch_size, shuffle=True),
            DataLoader(split("val"), batch_size=256),
        )
        module.load_state_dict(
            torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        )
    save_model(
        outputs.model,
        module.net,
        {
            "config": fusion_cfg.to_dict(),
            "classes": classes,
            "text_model": meta["text_model"],
            "max_text_tokens": int(meta["max_text_tokens"]),
            "token_grid": int(meta["token_grid"]),
            "captioner": json.loads(meta["captioner"]),
        },
    )
    with atomic_path(outputs.history) as tmp:
        pd.DataFrame(history.rows).to_csv(tmp, index=False)
    metrics = {
        "best_val_macro_recall": float(best.best_model_score or 0.0),
        "epochs_run": trainer.current_epoch,
    }
    write_json(outputs.metrics, metrics)
    return metrics
