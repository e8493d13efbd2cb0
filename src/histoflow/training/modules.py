"""LightningModules for the encoder and the fusion network: loss, validation metrics, optimiser.

Networks are built in :mod:`histoflow.models` and passed in; these modules only add loss,
metrics and optimisation.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from histoflow.metrics import macro_recall
from histoflow.training.finetune import freeze_norm_stats, set_trainable_blocks, trainable_blocks
from histoflow.training.optim import adamw, decay_groups, warmup_cosine

__all__ = ["EncoderClassifier", "FusionClassifier"]


class _ClassifierBase(L.LightningModule):
    """Shared validation metrics (macro recall, accuracy) and AdamW + cosine schedule."""

    def __init__(self, num_classes: int, lr: float, weight_decay: float, epochs: int):
        super().__init__()
        self.num_classes = num_classes
        self.lr, self.weight_decay, self.epochs = lr, weight_decay, epochs
        self._val_true: list[torch.Tensor] = []
        self._val_pred: list[torch.Tensor] = []

    def _record(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        self._val_true.append(y.detach().cpu())
        self._val_pred.append(logits.detach().argmax(-1).cpu())

    @override
    def on_validation_epoch_end(self) -> None:
        if not self._val_true:
            return
        y, p = torch.cat(self._val_true), torch.cat(self._val_pred)
        self._val_true.clear()
        self._val_pred.clear()
        if self._trainer is not None and self.trainer.world_size > 1:
            # DDP: each rank saw a shard of the validation set; every rank scores all of it, so
            # early stopping and checkpointing agree (DistributedSampler makes shards equal).
            y = self.all_gather(y.to(self.device)).flatten().cpu()
            p = self.all_gather(p.to(self.device)).flatten().cpu()
        y, p = y.numpy(), p.numpy()
        self.log("val_macro_recall", macro_recall(y, p, self.num_classes), prog_bar=True)
        self.log("val_accuracy", float(np.mean(y == p)))

    @override
    def configure_optimizers(self):
        opt = adamw(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(self.epochs, 1))
        return {"optimizer": opt, "lr_scheduler": sched}


class EncoderClassifier(_ClassifierBase):
    """A backbone plus a linear head, trained with (weighted, smoothed) cross-entropy.

    Which backbone blocks train is decided per epoch (``finetune``, see
    :mod:`histoflow.training.finetune`); frozen batch norms keep their running statistics. The
    optimiser is AdamW with separate learning rates for backbone and head, no weight decay on
    biases and norms, and a per-step linear warm-up then cosine decay to zero.
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        *,
        lr: float,
        weight_decay: float,
        epochs: int,
        backbone_lr: float | None = None,
        finetune: str = "full",
        unfreeze_blocks: int = 0,
        unfreeze_at: Mapping[int, int] | None = None,
        warmup_epochs: float = 0.0,
        label_smoothing: float = 0.0,
        class_weights: torch.Tensor | None = None,
        sample_names: Sequence[str] | None = None,
        channels_last: bool = False,
        grad_clip: float | None = None,
    ):
        super().__init__(num_classes, lr, weight_decay, epochs)
        self.encoder = encoder
        self.head = nn.Linear(encoder.num_features, num_classes)
        self.backbone_lr = lr if backbone_lr is None else backbone_lr
        self.finetune, self.unfreeze_blocks = finetune, unfreeze_blocks
        self.unfreeze_at = dict(unfreeze_at or {})
        self.warmup_epochs, self.label_smoothing = warmup_epochs, label_smoothing
        self.register_buffer("class_weights", class_weights, persistent=False)  # (C,) or None
        self.sample_names = sample_names  # names the images of a batch whose loss is not finite
        self.channels_last = channels_last
        self.grad_clip = grad_clip  # max gradient norm, clipped here (see on_before_optimizer_step)
        # Before any wrapping (DDP registers the trainable parameters once, at set-up).
        self._apply_finetune(epoch=0)

    @override
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.head(self.encoder(images))  # (B, C)

    @override
    def training_step(self, batch, batch_idx):
        images, y, *index = batch  # index: dataset positions, when the dataset returns them
        loss = F.cross_entropy(
            self(images), y, weight=self.class_weights, label_smoothing=self.label_smoothing
        )
        self._check_finite(loss, batch_idx, index[0] if index else None)
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    @override
    def validation_step(self, batch, _):
        images, y, *_ = batch
        logits = self(images)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True)
        self._record(logits, y)

    @override
    def on_train_epoch_start(self) -> None:
        self._apply_finetune(self.current_epoch)

    @override
    def train(self, mode: bool = True) -> EncoderClassifier:
        super().train(mode)
        if mode:
            freeze_norm_stats(self.encoder)
        return self

    @override
    def configure_optimizers(self):
        groups = decay_groups(self.encoder, self.backbone_lr, self.weight_decay)
        groups += decay_groups(self.head, self.lr, self.weight_decay)
        # Lightning refuses its own clipping with a fused optimiser; this module clips instead
        # (grad_clip). Sharded strategies (FSDP, DeepSpeed) clip through the Trainer, unfused.
        opt = adamw(groups, fused=self.trainer.gradient_clip_val is None)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = round(self.warmup_epochs * total / max(self.trainer.max_epochs or 1, 1))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, functools.partial(warmup_cosine, warmup_steps=warmup, total_steps=total)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @override
    def on_before_optimizer_step(self, optimizer) -> None:
        # Gradients are unscaled here (bf16-mixed and 32-true have no scaler) and, under DDP,
        # already averaged across ranks: what Lightning's own norm clipping would see.
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.grad_clip)

    def _apply_finetune(self, epoch: int) -> None:
        n = trainable_blocks(self.finetune, epoch, self.unfreeze_blocks, self.unfreeze_at)
        set_trainable_blocks(self.encoder, n)
        if self.training:
            freeze_norm_stats(self.encoder)

    def _check_finite(self, loss: torch.Tensor, batch_idx: int, index) -> None:
        finite = bool(torch.isfinite(loss.detach()))
        if self._trainer is not None and self.trainer.world_size > 1:
            # Every rank must stop together, or the others wait in the next all-reduce.
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        where = f"step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
        if index is not None and self.sample_names is not None:
            names = [self.sample_names[int(i)] for i in index]
            where += f"; the batch's images: {', '.join(names)}"
        raise FloatingPointError(
            f"training loss is {float(loss.detach())} at {where}. Check these images and lower "
            "train_encoder.lr / backbone_lr, or keep grad_clip set"
        )


class FusionClassifier(_ClassifierBase):
    """Trains every classifier head on the same fused representation; heads average at inference."""

    def __init__(
        self, net: nn.Module, num_classes: int, *, lr: float, weight_decay: float, epochs: int
    ):
        super().__init__(num_classes, lr, weight_decay, epochs)
        self.net = net

    @override
    def forward(self, image_tokens, text_tokens, text_mask) -> torch.Tensor:
        return self.net(image_tokens, text_tokens, text_mask)  # (B, K, C)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, k, c = logits.shape
        return F.cross_entropy(logits.reshape(b * k, c), y.repeat_interleave(k))

    @override
    def training_step(self, batch, _):
        *x, y = batch
        loss = self._loss(self(*x), y)
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    @override
    def validation_step(self, batch, _):
        *x, y = batch
        logits = self(*x)
        self.log("val_loss", self._loss(logits, y), on_epoch=True)
        # Average probabilities over heads, as inference does.
        self._record(logits.softmax(-1).mean(1), y)
