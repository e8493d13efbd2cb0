"""What a person sees while training: epoch lines in a log, and no Lightning noise."""

from __future__ import annotations

import re

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch.utils.data import DataLoader, TensorDataset

from histoflow.models.encoder import create_encoder
from histoflow.training.callbacks import EpochProgress, quiet_lightning
from histoflow.training.modules import EncoderClassifier


def _fit(epochs: int, callbacks: list) -> None:
    quiet_lightning()
    module = EncoderClassifier(
        create_encoder("test_resnet"), 3, lr=0.01, weight_decay=0.0, epochs=epochs
    )
    g = torch.Generator().manual_seed(0)
    data = DataLoader(
        TensorDataset(torch.randn(16, 3, 32, 32, generator=g), torch.arange(16) % 3), batch_size=8
    )
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(module, data, data)


def test_a_log_gets_one_line_per_epoch_and_no_lightning_noise(capfd):
    # capfd makes stderr a file, as a log is: lines, no bar. An interval of 0: every epoch.
    _fit(2, [EpochProgress("train_encoder", min_interval_s=0.0)])
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("train_encoder: epoch")]
    assert len(lines) == 2, err
    assert re.fullmatch(
        r"train_encoder: epoch 1/2  loss \d\.\d{3}  val macro recall \d\.\d{3}  "
        r"[\d.]+ s/epoch, at most \d+ s left",
        lines[0],
    ), lines[0]
    assert lines[-1].startswith("train_encoder: epoch 2/2") and "left" not in lines[-1]
    for noise in ("GPU available", "litlogger", "LeafSpec", "Epoch 0", "it/s"):
        assert noise not in err, noise


def test_the_epoch_early_stopping_ends_on_is_the_last_line(capfd):
    # Stops after the first epoch (the threshold is met at once): no "time left" on it.
    stop = EarlyStopping("val_loss", mode="max", stopping_threshold=-1.0)
    _fit(2, [EpochProgress("train_encoder", min_interval_s=0.0), stop])
    lines = [x for x in capfd.readouterr().err.splitlines() if "train_encoder: epoch" in x]
    assert len(lines) == 1 and lines[0].startswith("train_encoder: epoch 1/2")
    assert "left" not in lines[0]


def test_lines_are_throttled_but_the_last_is_kept(capfd):
    _fit(2, [EpochProgress("fusion classifier", min_interval_s=3600)])
    lines = [x for x in capfd.readouterr().err.splitlines() if "classifier: epoch" in x]
    assert lines == [lines[-1]] and lines[-1].startswith("fusion classifier: epoch 2/2")
