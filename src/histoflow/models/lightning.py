"""Training wiring: LightningModules for the encoder and the fusion network.

Networks are built elsewhere and passed in; these modules only add loss, metrics and
optimisation.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from histoflow.evaluation.metrics import macro_recall

__all__ = ["EncoderClassifier", "FusionClassifier", "History"]


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

    def on_validation_epoch_end(self) -> None:
        if not self._val_true:
            return
        y = torch.cat(self._val_true).numpy()
        p = torch.cat(self._val_pred).numpy()
        self._val_true.clear()
        self._val_pred.clear()
        self.log("val_macro_recall", macro_recall(y, p, self.num_classes), prog_bar=True)
        self.log("val_accuracy", float(np.mean(y == p)))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(self.epochs, 1))
        return {"optimizer": opt, "lr_scheduler": sched}


class EncoderClassifier(_ClassifierBase):
    """A backbone plus a linear head, trained with cross-entropy."""

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        *,
        lr: float,
        weight_decay: float,
        epochs: int,
        channels_last: bool = False,
    ):
        super().__init__(num_classes, lr, weight_decay, epochs)
        self.encoder = encoder
        self.head = nn.Linear(encoder.num_features, num_classes)
        self.channels_last = channels_last

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.head(self.encoder(images))  # (B, C)

    def training_step(self, batch, _):
        images, y = batch
        loss = F.cross_entropy(self(images), y)
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, _):
        images, y = batch
        logits = self(images)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True)
        self._record(logits, y)


class FusionClassifier(_ClassifierBase):
    """Trains every classifier head on the same fused representation; heads average at inference."""

    def __init__(
        self, net: nn.Module, num_classes: int, *, lr: float, weight_decay: float, epochs: int
    ):
        super().__init__(num_classes, lr, weight_decay, epochs)
        self.net = net

    def forward(self, image_tokens, text_tokens, text_mask) -> torch.Tensor:
        return self.net(image_tokens, text_tokens, text_mask)  # (B, K, C)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, k, c = logits.shape
        return F.cross_entropy(logits.reshape(b * k, c), y.repeat_interleave(k))

    def training_step(self, batch, _):
        *x, y = batch
        loss = self._loss(self(*x), y)
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, _):
        *x, y = batch
        logits = self(*x)
        self.log("val_loss", self._loss(logits, y), on_epoch=True)
        # Average probabilities over heads, as inference does.
        self._record(logits.softmax(-1).mean(1), y)


class History(L.Callback):
    """Collects epoch-level metrics for a training-curve plot."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # Runs after the epoch's validation, so train and val metrics are both current.
        row = {"epoch": trainer.current_epoch}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        self.rows.append(row)
