"""Stage ``train_encoder``: fine-tune a timm backbone on the training split with Lightning."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from histoflow.config import Params
from histoflow.data.dataset import TileDataset, create_transform
from histoflow.device import pick_device, use_bf16
from histoflow.io import atomic_path, write_json
from histoflow.models.checkpoint import save_model
from histoflow.models.encoder import create_encoder_from_params, encoder_description
from histoflow.models.lightning import EncoderClassifier, History
from histoflow.stages._tables import VALIDATED_MANIFEST, class_names, read_manifest

__all__ = ["PARAMS", "Inputs", "Outputs", "run"]

PARAMS = ("data.image_size", "train_encoder")


@dataclass(frozen=True)
class Inputs:
    data: Path = Path("data")
    manifest: Path = VALIDATED_MANIFEST


@dataclass(frozen=True)
class Outputs:
    model: Path = Path("outputs/train_encoder/model")
    history: Path = Path("outputs/train_encoder/history.csv")
    metrics: Path = Path("metrics/train_encoder.json")


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Train, keep the best epoch by validation macro recall, export it as the encoder."""
    p = cfg.train_encoder
    L.seed_everything(p.seed, workers=True, verbose=False)
    manifest = read_manifest(inputs.manifest)
    classes = class_names(manifest)
    index = {c: i for i, c in enumerate(classes)}
    loaders = {
        split: _loader(
            inputs.data,
            manifest[manifest["split"] == split],
            index,
            cfg.data.image_size,
            p.batch_size,
            p.num_workers,
            train=split == "train",
        )
        for split in ("train", "val")
    }
    device = pick_device(p.accelerator)
    bf16 = use_bf16(device, p.precision)
    encoder = create_encoder_from_params(p)
    module = EncoderClassifier(
        encoder, len(classes), lr=p.lr, weight_decay=p.weight_decay, epochs=p.epochs
    )
    history = History()
    with tempfile.TemporaryDirectory(prefix="histoflow-ckpt-") as ckpt_dir:
        best = ModelCheckpoint(
            dirpath=ckpt_dir, monitor="val_macro_recall", mode="max", save_top_k=1, filename="best"
        )
        trainer = L.Trainer(
            max_epochs=p.epochs,
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=1,
            precision="bf16-mixed" if bf16 else "32-true",
            callbacks=[best, history],
            logger=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            deterministic=False,
        )
        trainer.fit(module, loaders["train"], loaders["val"])
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)[
            "state_dict"
        ]
        module.load_state_dict(state)
    save_model(
        outputs.model,
        module.encoder,
        {
            **encoder_description(p, encoder),
            "image_size": cfg.data.image_size,
            "classes": classes,
        },
    )
    with atomic_path(outputs.history) as tmp:
        pd.DataFrame(history.rows).to_csv(tmp, index=False)
    metrics = {
        "best_val_macro_recall": float(best.best_model_score or 0.0),
        "epochs_run": trainer.current_epoch,
        "precision": "bf16-mixed" if bf16 else "32-true",
        "device": device.type,
    }
    write_json(outputs.metrics, metrics)
    return metrics


def _loader(
    root: Path,
    rows: pd.DataFrame,
    index: dict[str, int],
    size: int,
    batch_size: int,
    workers: int,
    *,
    train: bool,
) -> DataLoader:
    if rows.empty:
        raise ValueError(
            f"the {'train' if train else 'val'} split is empty; check data.val_fraction "
            "and that every class has more than one patient"
        )
    dataset = TileDataset(
        root,
        rows["path"].tolist(),
        [index[c] for c in rows["label"]],
        create_transform(size, train=train),
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        num_workers=workers,
        persistent_workers=workers > 0,
        drop_last=train and len(dataset) > batch_size,
    )
