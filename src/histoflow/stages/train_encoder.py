"""Stage ``train_encoder``: fine-tune a timm backbone on the training split with Lightning.

The recipe comes from ``params.yaml`` (``train_encoder``): full, partial or linear-probe
fine-tuning, class balancing, warm-up + cosine schedule, early stopping on validation macro
recall, augmentation, and Lightning's ``devices`` / ``num_nodes`` / ``strategy`` for DDP.

Checkpoints (``best.ckpt``, ``last.ckpt``) live in ``outputs/.train_encoder_checkpoints/``,
beside DVC's outs (DVC deletes declared outs before a stage runs). A run that was killed
resumes from ``last.ckpt`` when the parameters and the data are the same (their fingerprint
is stored with the checkpoints); anything else starts fresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.plugins.io.torch_plugin import TorchCheckpointIO
from torch.utils.data import DataLoader, WeightedRandomSampler

from histoflow.config import Params, TrainEncoderConfig
from histoflow.data.datasets import TileDataset
from histoflow.data.manifest import class_names, read_manifest
from histoflow.data.transforms import create_transform
from histoflow.device import pick_device, use_bf16
from histoflow.io import atomic_path, write_json
from histoflow.models.checkpoint import save_model
from histoflow.models.encoder import create_encoder_from_params, encoder_description
from histoflow.models.lightning import EncoderClassifier, History

__all__ = [
    "PARAMS",
    "Inputs",
    "Outputs",
    "build_module",
    "build_trainer",
    "checkpoint_dir",
    "run",
    "train_loader",
]

PARAMS = ("data.image_size", "train_encoder")
_MONITOR = "val_macro_recall"
_SHARDED = ("fsdp", "deepspeed")  # strategies whose gradient clipping must go through the Trainer


@dataclass(frozen=True)
class Inputs:
    data: Path = Path("data")
    manifest: Path = Path("outputs/validate/manifest.parquet")


@dataclass(frozen=True)
class Outputs:
    model: Path = Path("outputs/train_encoder/model")
    history: Path = Path("outputs/train_encoder/history.csv")
    metrics: Path = Path("metrics/train_encoder.json")


def checkpoint_dir(outputs: Outputs) -> Path:
    """Where checkpoints persist between runs: ``outputs/.train_encoder_checkpoints``."""
    return Path(outputs.model).parent.parent / ".train_encoder_checkpoints"


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Train, keep the best epoch by validation macro recall, export it as the encoder.

    Under DDP every process runs this function; only global rank 0 writes files.

    Raises:
        ValueError: an empty train or val split (named), or ``unfreeze_at`` under DDP.
        FloatingPointError: a non-finite training loss, naming the step and the batch's images.
    """
    p = cfg.train_encoder
    L.seed_everything(p.seed, workers=True, verbose=False)
    manifest = read_manifest(inputs.manifest)
    classes = class_names(manifest)
    splits = {s: manifest[manifest["split"] == s] for s in ("train", "val")}
    for name, rows in splits.items():
        if rows.empty:
            raise ValueError(
                f"train_encoder: the {name} split of {inputs.manifest} has no images; check "
                "data.val_fraction and that every class has more than one patient"
            )
    labels = {s: [classes.index(c) for c in rows["label"]] for s, rows in splits.items()}
    size = cfg.data.image_size
    loaders = {
        "train": train_loader(
            p, inputs.data, splits["train"]["path"].tolist(), labels["train"], size
        ),
        "val": _val_loader(p, inputs.data, splits["val"]["path"].tolist(), labels["val"], size),
    }
    device = pick_device(p.accelerator)
    bf16 = use_bf16(device, p.precision)
    encoder = create_encoder_from_params(p)
    module = build_module(
        p, encoder, len(classes), labels["train"], sample_names=splits["train"]["path"].tolist()
    )

    ckpt_dir = checkpoint_dir(outputs)
    fingerprint = _fingerprint(cfg, manifest)
    resume = _resume_or_reset(ckpt_dir, fingerprint, write=_is_rank_zero())
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=_MONITOR,
        mode="max",
        save_top_k=1,
        enable_version_counter=False,  # always best.ckpt / last.ckpt, overwritten in place
    )
    # Lightning's save_last writes only when a top-k checkpoint was saved; this one writes
    # every epoch. After `best`, so that the state it records includes this epoch's best.
    last = ModelCheckpoint(
        dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False
    )
    stop = EarlyStopping(monitor=_MONITOR, mode="max", patience=p.patience)
    callbacks = [History(), stop, best, last]
    logger = _training_logger(p)
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = build_trainer(p, device, bf16, callbacks=callbacks, logger=logger)
    if trainer.world_size > 1 and p.unfreeze_at:
        raise ValueError(
            "train_encoder.unfreeze_at needs a single device: DDP registers the trainable "
            "parameters once; use unfreeze_blocks, or devices: 1"
        )
    start_epoch = _checkpoint_epoch(resume) if resume else None
    trainer.fit(module, loaders["train"], loaders["val"], ckpt_path=resume)

    metrics = {
        "precision": "bf16-mixed" if bf16 else "32-true",
        "device": device.type,
        "world_size": trainer.world_size,
        "resumed_from_epoch": start_epoch,
        "global_step": trainer.global_step,
    }
    if not trainer.is_global_zero:
        return metrics
    # The checkpoints are the one record of the run (also under ddp_spawn, whose callbacks
    # ran in other processes): the model from best.ckpt, the curves from last.ckpt.
    state = torch.load(ckpt_dir / "best.ckpt", map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])
    rows = _history_rows(torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True))
    save_model(
        outputs.model,
        module.encoder,
        {
            **encoder_description(p, encoder),
            "image_size": size,
            "classes": classes,
            "crop_to_foreground": p.crop_to_foreground,
        },
    )
    with atomic_path(outputs.history) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    metrics |= {
        "best_val_macro_recall": max((r.get(_MONITOR, 0.0) for r in rows), default=0.0),
        "epochs_run": len(rows),
        "epochs_this_run": len(rows) - (start_epoch or 0),
    }
    write_json(outputs.metrics, metrics)
    write_json(ckpt_dir / "fingerprint.json", {"fingerprint": fingerprint, "complete": True})
    return metrics


def build_module(
    p: TrainEncoderConfig,
    encoder: torch.nn.Module,
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
    """The Lightning Trainer of the stage (``overrides`` are passed on, for benchmarks)."""
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
        "plugins": [_AtomicCheckpointIO()],
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "deterministic": False,
    }
    return L.Trainer(**(options | overrides))


def train_loader(
    p: TrainEncoderConfig, root: Path, paths: list[str], labels: list[int], size: int
) -> DataLoader:
    """Augmented training batches; with ``balanced_sampler``, classes drawn equally often."""
    dataset = TileDataset(
        root,
        paths,
        labels,
        create_transform(
            size, train=True, augment=p.augment, crop_to_foreground=p.crop_to_foreground
        ),
        return_index=True,
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
    p: TrainEncoderConfig, root: Path, paths: list[str], labels: list[int], size: int
) -> DataLoader:
    transform = create_transform(size, train=False, crop_to_foreground=p.crop_to_foreground)
    return DataLoader(
        TileDataset(root, paths, labels, transform),
        batch_size=p.batch_size,
        num_workers=p.num_workers,
        persistent_workers=p.num_workers > 0,
    )


class _AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed: a kill never leaves half a file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def _fingerprint(cfg: Params, manifest: pd.DataFrame) -> str:
    """sha256 of the stage's parameters and of the images it trains on (paths, labels, splits
    and, from ``validate``, the files' own sha256)."""
    columns = [c for c in ("path", "label", "split", "sha256") if c in manifest]
    blob = json.dumps(
        {
            "image_size": cfg.data.image_size,
            "train_encoder": cfg.train_encoder.model_dump(mode="json"),
            "data": manifest[columns].sort_values("path").to_csv(index=False),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _resume_or_reset(folder: Path, fingerprint: str, *, write: bool) -> str | None:
    """``last.ckpt`` when an unfinished run with the same fingerprint left one, else None
    (and, on rank 0, an emptied folder recording the new fingerprint)."""
    record = folder / "fingerprint.json"
    last = folder / "last.ckpt"
    if record.is_file() and last.is_file():
        saved = json.loads(record.read_text())
        if saved.get("fingerprint") == fingerprint and not saved.get("complete"):
            return str(last)
    if write:
        shutil.rmtree(folder, ignore_errors=True)
        write_json(record, {"fingerprint": fingerprint, "complete": False})
    return None


def _checkpoint_epoch(path: str) -> int:
    # The epoch a resumed run starts at: the saved epoch plus one (the epoch was finished).
    state = torch.load(path, map_location="cpu", weights_only=True)
    return int(state["epoch"]) + 1


def _history_rows(checkpoint: dict) -> list[dict]:
    for key, state in checkpoint.get("callbacks", {}).items():
        if key.startswith("History"):
            return list(state["rows"])
    return []


def _is_rank_zero() -> bool:
    # Before the Trainer exists: DDP's launchers set these for every process but the first.
    return all(int(os.environ.get(k, 0)) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _training_logger(p: TrainEncoderConfig):
    """An MLflow logger for the training curves when ``MLFLOW_TRACKING_URI`` is set."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return None  # and do not import the registry (and mlflow): seconds per stage run
    from histoflow.registry.training_logger import create_training_logger

    return create_training_logger("train_encoder", p.model_dump(mode="json"))
