"""Lightning callbacks shared by the encoder and fusion training loops, and their quiet.

:class:`History` keeps the training curve; :class:`EpochProgress` is what a person watching
sees: one line per epoch in a log, a bar in a terminal. :func:`quiet_lightning` silences
Lightning's adverts and notices at their source.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import sys
import time
import warnings
from collections.abc import Mapping

import lightning as L
from lightning.pytorch.callbacks import ProgressBar
from typing_extensions import override

__all__ = ["EpochProgress", "History", "quiet_lightning"]


def quiet_lightning() -> None:
    """Silence what Lightning and torch print on every fit that says nothing about this one.

    "GPU available: False", "TPU available", the litlogger advert, "`Trainer.fit` stopped" and
    "Loading `train_dataloader`..." (Lightning's rank-zero info log); torch's ``LeafSpec``
    deprecation warning, raised from Lightning's own code; and "Checkpoint directory exists and
    is not empty", which the encoder's checkpoint folder always is by design (it holds the run's
    fingerprint, and on a resume its own last checkpoint). Warnings Lightning raises about this
    fit (e.g. few data loader workers) still show.
    """
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


class EpochProgress(ProgressBar):
    """Epoch, training loss, validation macro recall and time left, for a person watching.

    In a terminal, one bar over the epochs; in a log (stderr a file, or tqdm's own
    ``TQDM_DISABLE``, which ``histoflow`` sets when its output is not a terminal), one line per epoch, at most one every ``min_interval_s`` seconds and always
    the last, so that hundreds of sub-second epochs do not flood it. Lightning uses this instead
    of its own bar (a progress bar in the callbacks replaces the default).

    Args:
        name: what trains, first on every line (``train_encoder``, ``concat classifier``).
        min_interval_s: the shortest time between two logged lines.
    """

    def __init__(self, name: str, min_interval_s: float = 10.0):
        super().__init__()
        self.name, self.min_interval_s = name, min_interval_s
        self._enabled, self._bar, self._pending = True, None, None
        self._started = self._last_line = 0.0
        self._first_epoch = 0

    @override
    def disable(self) -> None:
        self._enabled = False

    @override
    def enable(self) -> None:
        self._enabled = True

    @override
    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self._enabled:
            return
        from tqdm import tqdm

        self._started = self._last_line = time.monotonic()
        self._first_epoch = trainer.current_epoch  # a resumed run starts later
        self._bar = tqdm(
            total=trainer.max_epochs,
            initial=trainer.current_epoch,
            desc=self.name,
            unit="epoch",
            file=sys.stderr,
            dynamic_ncols=True,
            # Lines, not a bar, into a log file; elsewhere tqdm's own switch (TQDM_DISABLE) says.
            **({"disable": True} if _writes_to_file(sys.stderr) else {}),
        )
        if trainer.current_epoch and self._bar.disable:
            self._line(f"{self.name}: resuming at epoch {trainer.current_epoch + 1}")

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self._enabled or self._bar is None:
            return
        done = trainer.current_epoch + 1
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        now = time.monotonic()
        per_epoch = (now - self._started) / max(done - self._first_epoch, 1)
        loss = f"{metrics.get('train_loss', math.nan):.3f}"
        recall = f"{metrics.get('val_macro_recall', math.nan):.3f}"
        if not self._bar.disable:
            self._bar.set_postfix({"loss": loss, "val macro recall": recall}, refresh=False)
            self._bar.update(1)
            return
        # Held until the next epoch starts: only then is it known not to be the last one.
        self._pending = (
            f"{self.name}: epoch {done}/{trainer.max_epochs}  loss {loss}  "
            f"val macro recall {recall}  {per_epoch:.1f} s/epoch",
            per_epoch * (trainer.max_epochs - done),
        )

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        now = time.monotonic()
        if self._pending and now - self._last_line >= self.min_interval_s:
            text, left = self._pending
            self._line(f"{text}, at most {_duration(left)} left")
            self._last_line, self._pending = now, None

    @override
    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._pending:  # the last epoch, whether early stopping or max_epochs ended it
            self._line(self._pending[0])
            self._pending = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    @staticmethod
    def _line(text: str) -> None:
        print(text, file=sys.stderr, flush=True)


def _writes_to_file(stream) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):
        return False


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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
