"""Training curves reach MLflow (real SQLite store) when a tracking URI is set, and only then."""

from __future__ import annotations

import lightning as L
import torch
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader, TensorDataset

from histoflow.models.encoder import create_encoder
from histoflow.training.loggers import create_training_logger
from histoflow.training.modules import EncoderClassifier


def test_no_tracking_uri_no_logger(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert create_training_logger("train_encoder", {}) is None


def test_curves_are_logged_per_epoch(monkeypatch, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "curves")
    monkeypatch.chdir(tmp_path)
    logger = create_training_logger("train_encoder", {"lr": 0.01, "augment": {"rot90": True}})
    module = EncoderClassifier(
        create_encoder("test_resnet"), 3, lr=0.01, weight_decay=0.0, epochs=2
    )
    data = TensorDataset(torch.randn(16, 3, 32, 32), torch.arange(16) % 3)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))
    client = MlflowClient(uri)
    run = client.get_run(logger.run_id)
    assert run.info.run_name == "train_encoder" and run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.01" and run.data.params["augment/rot90"] == "True"
    for key in ("train_loss", "val_loss", "val_macro_recall"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 2, key
