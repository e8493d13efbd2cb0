"""Fine-tuning an image encoder with Lightning: loaders, module, Trainer, checkpoints and resume.

The network comes in built (:func:`histoflow.models.encoder.create_encoder_from_params`); this
module trains it with the recipe of ``train_encoder`` (full, partial or linear-probe
fine-tuning, class balancing, warm-up + cosine schedule, early stopping on validation macro
recall, augmentation, and Lightning's ``devices`` / ``num_nodes`` / ``strategy`` for DDP).

Checkpoints (``best.ckpt``, ``last.ckpt``) live in a folder the caller names, outside DVC's outs
(DVC deletes declared outs before a stage runs); a killed run resumes from ``last.ckpt``
(:mod:`histoflow.training.checkpoints`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler

from histoflow.config import TrainEncoderConfig
from histoflow.data.datasets import TileDataset
from histoflow.data.images import DEFAULT_MAX_PIXELS
from histoflow.data.transforms import create_transform
from histoflow.device import pick_device, use_bf16
from histoflow.training.callbacks import EpochProgress, History, quiet_lightning
from histoflow.training.checkpoints import (
    AtomicCheckpointIO,
    checkpoint_epoch,
    history_rows,
    resume_or_reset,
)
from histoflow.training.loggers import create_training_logger
from histoflow.training.modules import EncoderClassifier
from histoflow.training.reproducibility import DETERMINISTIC

__all__ = [
    "MONITOR",
    "EncoderFit",
    "build_module",
    "build_trainer",
    "fit_encoder",
    "train_loader",
]

MONITOR = "val_macro_recall"
_SHARDED = ("fsdp", "deepspeed")  # strategies whose gradient clipping must go through the Trainer


@dataclass
class EncoderFit:
    """What :func:`fit_encoder` returns.

    Attributes:
        module: the LightningModule, with the best epoch's weights on global rank 0.
        history: one row per epoch (the training curve), on global rank 0.
        metrics: precision, device, world size, resumed epoch, global step and, on rank 0,
            the best validation macro recall and epoch counts.
        is_global_zero: whether this process writes outputs (under DDP, one of several).
    """

    module: EncoderClassifier
    history: list[dict]
    metrics: dict
    is_global_zero: bool


def fit_encoder(
    p: TrainEncoderConfig,
    encoder: nn.Module,
    manifest: pd.DataFrame,
    classes: list[str],
    *,
    data: Path,
    image_size: int,
    checkpoints: Path,
    run_fingerprint: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    stain: nn.Module | None = None,
) -> EncoderFit:
    """Train ``encoder`` with a linear head on the train split; keep the best epoch.

    Under DDP every process runs this function; only global rank 0 reads the checkpoints back.

    Args:
        p: the recipe.
        encoder: the backbone to train (built, with any pretrained weights loaded).
        manifest: the validated manifest (``path``, ``label``, ``split``).
        classes: class names in label-index order.
        data: the folder the manifest's paths are relative to.
        image_size: the side images are resized to.
        checkpoints: where ``best.ckpt`` / ``last.ckpt`` persist between runs.
        run_fingerprint: identifies parameters and data (:func:`fingerprint`); a killed run
            with the same fingerprint resumes.
        max_pixels: the most pixels an image may have (``data.max_pixels``), checked from
            its header before it is decoded.
        stain: the stain normaliser fitted on the train split, applied to train and val
            tiles alike (None: ``data.stain_normalization: none``).

    Raises:
        ValueError: an empty train or val split, or ``unfreeze_at`` under DDP.
        FloatingPointError: a non-finite training loss, naming the step and the batch's images.
    """
    splits = {s: manifest[manifest["split"] == s] for s in ("train", "val")}
    empty = [name for name, rows in splits.items() if rows.empty]
    if empty:
        raise ValueError(f"train_encoder: the {' and '.join(empty)} split(s) have no images")
    labels = {s: [classes.index(c) for c in rows["label"]] for s, rows in splits.items()}
    train_paths = splits["train"]["path"].tolist()
    loaders = {
        "train": train_loader(
            p, data, train_paths, labels["train"], image_size, max_pixels=max_pixels, stain=stain
        ),
        "val": _val_loader(
            p, data, splits["val"]["path"].tolist(), labels["val"], image_size, max_pixels, stain
        ),
    }
    quiet_lightning()
    device = pick_device(p.accelerator)
    bf16 = use_bf16(device, p.precision)
    module = build_module(p, encoder, len(classes), labels["train"], sample_names=train_paths)

    resume = resume_or_reset(checkpoints, run_fingerprint, write=_is_rank_zero())
    best = ModelCheckpoint(
        dirpath=checkpoints,
        filename="best",
        monitor=MONITOR,
        mode="max",
        save_top_k=1,
        enable_version_counter=False,  # always best.ckpt / last.ckpt, overwritten in place
    )
    # Lightning's save_last writes only when a top-k checkpoint was saved; this one writes
    # every epoch. After `best`, so that the state it records includes this epoch's best.
    last = ModelCheckpoint(
        dirpath=checkpoints, filename="last", save_top_k=1, enable_version_counter=False
    )
    stop = EarlyStopping(monitor=MONITOR, mode="max", patience=p.patience)
    callbacks = [History(), stop, best, last, EpochProgress("train_encoder")]
    # With MLFLOW_TRACKING_URI set, the curves and the per-step learning rate go there too.
    logger = create_training_logger("train_encoder", p.model_dump(mode="json"))
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = build_trainer(p, device, bf16, callbacks=callbacks, logger=logger)
    if trainer.world_size > 1 and p.unfreeze_at:
        raise ValueError(
            "train_encoder.unfreeze_at needs a single device: DDP registers the trainable "
            "parameters once; use unfreeze_blocks, or devices: 1"
        )
    start_epoch = checkpoint_epoch(resume) if resume else None
    trainer.fit(module, loaders["train"], loaders["val"], ckpt_path=resume)

    metrics = {
        "precision": "bf16-mixed" if bf16 else "32-true",
        "device": device.type,
        "world_size": trainer.world_size,
        "resumed_from_epoch": start_epoch,
        "global_step": trainer.global_step,
    }
    if not trainer.is_global_zero:
        return EncoderFit(module, [], metrics, is_global_zero=False)
    # The checkpoints are the one record of the run (also under ddp_spawn, whose callbacks
    # ran in other processes): the model from best.ckpt, the curves from last.ckpt.
    state = torch.load(checkpoints / "best.ckpt", map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])
    rows = history_rows(
        torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    )
    metrics |= {
        "best_val_macro_recall": max((r.get(MONITOR, 0.0) for r in rows), default=0.0),
        "epochs_run": len(rows),
        "epochs_this_run": len(rows) - (start_epoch or 0),
    }
    return EncoderFit(module, rows, metrics, is_global_zero=True)


def build_module(
    p: TrainEncoderConfig,
    encoder: nn.Module,
    num_classes: int,
    train_labels: list[int],
    *,
    sample_names: list[str] | None = None,
) -> EncoderClassifier:
    """The LightningModule for ``encoder`` with the recipe of ``p``."""
    weights = None
    if p.class_weighted_loss:
        counts = np.bincount(train_labels, minlength=num_classes).clip(min=1)
        weights = torch.tensor(len(train_labels) / (num_classes * counts), dtype=torch.float32)
    return EncoderClassifier(
        encoder,
        num_classes,
        lr=p.lr,
        backbone_lr=p.backbone_lr,
        weight_decay=p.weight_decay,
        epochs=p.epochs,
        finetune=p.finetune,
        unfreeze_blocks=p.unfreeze_blocks,
        unfreeze_at=p.unfreeze_at,
        warmup_epochs=p.warmup_epochs,
        label_smoothing=p.label_smoothing,
        class_weights=weights,
        sample_names=sample_names,
        grad_clip=None if p.strategy in _SHARDED else p.grad_clip,
    )


def build_trainer(
    p: TrainEncoderConfig,
    device: torch.device,
    bf16: bool,
    *,
    callbacks: list,
    logger=None,
    **overrides,
) -> L.Trainer:
    """The Lightning Trainer of the recipe (``overrides`` are passed on, for benchmarks)."""
    options = {
        "max_epochs": p.epochs,
        "accelerator": "gpu" if device.type == "cuda" else "cpu",
        "devices": p.devices,
        "num_nodes": p.num_nodes,
        "strategy": p.strategy,
        "precision": "bf16-mixed" if bf16 else "32-true",
        # Sharded strategies clip through the Trainer; elsewhere the module does (fused AdamW).
        "gradient_clip_val": p.grad_clip if p.strategy in _SHARDED else None,
        "callbacks": callbacks,
        "logger": logger or False,
        "plugins": [AtomicCheckpointIO()],
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "deterministic": DETERMINISTIC,
    }
    return L.Trainer(**(options | overrides))


def train_loader(
    p: TrainEncoderConfig,
    root: Path,
    paths: list[str],
    labels: list[int],
    size: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    stain: nn.Module | None = None,
) -> DataLoader:
    """Augmented training batches; with ``balanced_sampler``, classes drawn equally often.

    ``stain`` normalises each tile before the augmentations (``data.stain_normalization``).
    """
    dataset = TileDataset(
        root,
        paths,
        labels,
        create_transform(
            size,
            train=True,
            augment=p.augment,
            crop_to_foreground=p.crop_to_foreground,
            stain=stain,
        ),
        return_index=True,
        max_pixels=max_pixels,
    )
    sampler = None
    if p.balanced_sampler:
        counts = np.bincount(labels)
        weights = torch.tensor(1.0 / counts[labels], dtype=torch.double)  # (N,)
        generator = torch.Generator().manual_seed(p.seed)
        sampler = WeightedRandomSampler(weights, len(labels), replacement=True, generator=generator)
    return DataLoader(
        dataset,
        batch_size=p.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=p.num_workers,
        persistent_workers=p.num_workers > 0,
        # Only a last batch of one image is dropped: it breaks batch norm in training mode.
        drop_last=len(dataset) % p.batch_size == 1,
    )


def _val_loader(
    p: TrainEncoderConfig,
    root: Path,
    paths: list[str],
    labels: list[int],
    size: int,
    max_pixels: int,
    stain: nn.Module | None,
) -> DataLoader:
    transform = create_transform(
        size, train=False, crop_to_foreground=p.crop_to_foreground, stain=stain
    )
    return DataLoader(
        TileDataset(root, paths, labels, transform, max_pixels=max_pixels),
        batch_size=p.batch_size,
        num_workers=p.num_workers,
        persistent_workers=p.num_workers > 0,
    )


def _is_rank_zero() -> bool:
    # Before the Trainer exists: DDP's launchers set these for every process but the first.
    return all(int(os.environ.get(k, 0)) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))
