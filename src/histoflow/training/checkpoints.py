"""Checkpoints of a training run: written atomically, resumed only by the same run.

A run's fingerprint (its recipe and its data) is stored beside its checkpoints; a killed run
resumes from ``last.ckpt`` when the next run has the same fingerprint, anything else starts
fresh, and a finished run is marked complete so that the next one starts fresh too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import torch
from lightning.pytorch.plugins.io.torch_plugin import TorchCheckpointIO

from histoflow.config import TrainEncoderConfig
from histoflow.io import atomic_path, write_json

__all__ = [
    "AtomicCheckpointIO",
    "checkpoint_epoch",
    "fingerprint",
    "history_rows",
    "mark_complete",
    "resume_or_reset",
]


def fingerprint(
    p: TrainEncoderConfig, image_size: int, manifest: pd.DataFrame, stain: dict | None = None
) -> str:
    """The sha256 of the recipe and of the images it trains on.

    The images are named by paths, labels, splits and, from ``validate``, the files' own sha256:
    a killed run resumes only under the same fingerprint. ``stain`` is the stain normalisation
    target the tiles are normalised to, if any.
    """
    columns = [c for c in ("path", "label", "split", "sha256") if c in manifest]
    run = {
        "image_size": image_size,
        "train_encoder": p.model_dump(mode="json"),
        "data": manifest[columns].sort_values("path").to_csv(index=False),
    }
    blob = json.dumps(run | ({"stain": stain} if stain else {}), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def mark_complete(checkpoints: Path, run_fingerprint: str) -> None:
    """Record that the run with this fingerprint finished: the next run starts fresh."""
    write_json(checkpoints / "fingerprint.json", {"fingerprint": run_fingerprint, "complete": True})


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed: a kill never leaves half a file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        """Save ``checkpoint`` to ``path`` atomically."""
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def resume_or_reset(folder: Path, run_fingerprint: str, *, write: bool) -> str | None:
    """``last.ckpt`` when an unfinished run with the same fingerprint left one, else None.

    With None and ``write``, the folder is emptied and records the new fingerprint.
    """
    record = folder / "fingerprint.json"
    last = folder / "last.ckpt"
    if record.is_file() and last.is_file():
        saved = json.loads(record.read_text())
        if saved.get("fingerprint") == run_fingerprint and not saved.get("complete"):
            return str(last)
    if write:
        shutil.rmtree(folder, ignore_errors=True)
        write_json(record, {"fingerprint": run_fingerprint, "complete": False})
    return None


def checkpoint_epoch(path: str) -> int:
    """The epoch a resumed run starts at: the saved epoch plus one (that epoch finished)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return int(state["epoch"]) + 1


def history_rows(checkpoint: dict) -> list[dict]:
    """The training curve a checkpoint's ``History`` callback state holds."""
    for key, state in checkpoint.get("callbacks", {}).items():
        if key.startswith("History"):
            return list(state["rows"])
    return []
