"""Lightning callbacks shared by the encoder and fusion training loops."""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
from typing_extensions import override

__all__ = ["History"]


class History(L.Callback):
    """One row of metrics per epoch for the training curve, kept in checkpoints.

    A resumed run continues the same curve.

    The row is written at the end of each epoch's validation (before the checkpoint of that
    epoch is saved), with the epoch's mean training loss measured here, its validation metrics
    and the learning rate of the first parameter group.
    """

    def __init__(self):
        self.rows: list[dict] = []
        self._loss_sum, self._batches = 0.0, 0

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._loss_sum, self._batches = 0.0, 0

    @override
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        if loss is not None:
            self._loss_sum = loss.detach() + self._loss_sum  # stays on the device
            self._batches += 1

    @override
    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": trainer.current_epoch}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        if self._batches:
            row["train_loss"] = float(self._loss_sum) / self._batches
        if trainer.optimizers:
            row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]

    @override
    def state_dict(self) -> dict:
        return {"rows": self.rows}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict["rows"])
