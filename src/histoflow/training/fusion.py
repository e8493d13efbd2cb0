"""Training any fusion variant on cached embeddings: early stopping on validation macro recall.

Shared by ``train_fusion`` (the deployed model and its ablations) and ``evaluate``'s cross-group
protocol (:func:`fit_on_group`), so every variant is trained by the same recipe.

Rows come from the feature store batch by batch (:class:`FeatureRows` over
:class:`histoflow.embeddings.store.FeatureStore`): memory holds one batch, not the store. The
shuffle is a seeded permutation of row positions drawn exactly as for in-memory rows, so the
batches, and the trained network, are the same bit for bit as with :func:`feature_dataset`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from histoflow.config import TrainFusionConfig
from histoflow.training.callbacks import EpochProgress, History, quiet_lightning
from histoflow.training.checkpoints import history_rows
from histoflow.training.modules import FusionClassifier
from histoflow.training.reproducibility import DETERMINISTIC, seed

__all__ = [
    "FeatureRows",
    "FitResult",
    "feature_dataset",
    "fit_classifier",
    "fit_on_group",
]


@dataclass
class FitResult:
    """The trained network (best epoch, eval mode) and what training recorded."""

    net: nn.Module
    best_val_macro_recall: float
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    # False on the other ranks of a DDP run started by torchrun or srun (strategy ddp): only
    # rank 0 holds the run's checkpoints and writes outputs.
    is_global_zero: bool = True


def feature_dataset(tensors: dict[str, torch.Tensor], y: torch.Tensor, rows) -> TensorDataset:
    """(image tokens, caption tokens, caption mask, label) for the selected rows, in float32.

    Holds the rows in memory: for small sets and tests; stages read with :class:`FeatureRows`.
    """
    rows = torch.as_tensor(rows)
    return TensorDataset(
        tensors["image_tokens"][rows].float(),
        tensors["text_tokens"][rows].float(),
        tensors["text_mask"][rows],
        y[rows],
    )


class FeatureRows(Dataset):
    """Selected rows of a feature store, read when a batch asks for them.

    A batch is (image tokens (B, T, D), caption tokens (B, L, Dt) float32, caption mask (B, L),
    labels (B,)), the same tensors :func:`feature_dataset` holds in memory. ``__getitems__``
    reads a whole batch with one call (torch's batched fetch), so a shuffled batch is one
    sorted read pass over the store.

    Args:
        store: a :class:`~histoflow.embeddings.store.FeatureStore` (anything with ``rows``).
        y: (N,) class index of every store row.
        rows: the selected rows: a boolean mask over the store or row numbers.
    """

    def __init__(self, store, y: torch.Tensor, rows):
        rows = np.asarray(rows)
        self.store = store
        self.y = torch.as_tensor(y)
        self.rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, positions: list[int]) -> tuple[torch.Tensor, ...]:
        rows = self.rows[np.asarray(positions, dtype=np.int64)]
        batch = self.store.rows(rows)
        return (
            torch.from_numpy(batch["image_tokens"]).float(),
            torch.from_numpy(batch["text_tokens"]).float(),
            torch.from_numpy(batch["text_mask"]),
            self.y[torch.from_numpy(rows)],
        )

    def __getitem__(self, position: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[0] for t in self.__getitems__([position]))


def _as_batch(batch):
    return batch  # FeatureRows.__getitems__ returns the batch already stacked


def _loader(rows: Dataset, batch_size: int, **kwargs) -> DataLoader:
    collate = _as_batch if isinstance(rows, FeatureRows) else None
    return DataLoader(rows, batch_size=batch_size, collate_fn=collate, **kwargs)


def fit_classifier(
    build: Callable[[], nn.Module], train: Dataset, val: Dataset, p: TrainFusionConfig
) -> FitResult:
    """Train ``build()`` with :class:`FusionClassifier`; keep the epoch with the best val recall.

    Deterministic on CPU for the same rows and ``p``: the network is built only after
    ``p.seed`` is set, so its initial weights come from the seed too (a network built before
    would take torch's per-process random seed), the batch order has its own generator, and
    Lightning runs torch's deterministic algorithms
    (:data:`~histoflow.training.reproducibility.DETERMINISTIC`).

    Args:
        build: makes the untrained network (e.g. ``partial(create_classifier, kind, cfg)``).
        train: the training rows (:class:`FeatureRows`, or :func:`feature_dataset` in memory).
        val: the validation rows, for early stopping and the best epoch.
        p: the recipe; ``p.seed`` seeds everything random (``p.model_copy(update=...)`` for
            another seed).

    Raises:
        ValueError: when the training or validation set is empty.
    """
    if len(train) == 0 or len(val) == 0:
        raise ValueError(
            f"cannot train a fusion model on {len(train)} train and {len(val)} val rows; "
            "each needs at least one image"
        )
    quiet_lightning()
    seed(p.seed)
    net = build()
    num_classes = net.cfg.num_classes
    module = FusionClassifier(
        net, num_classes, lr=p.lr, weight_decay=p.weight_decay, epochs=p.epochs
    )
    with tempfile.TemporaryDirectory(prefix="histoflow-fusion-") as ckpt_dir:
        best = ModelCheckpoint(
            dirpath=ckpt_dir, monitor="val_macro_recall", mode="max", save_top_k=1, filename="best"
        )
        last = ModelCheckpoint(dirpath=ckpt_dir, filename="last", enable_version_counter=False)
        stop = EarlyStopping(monitor="val_macro_recall", mode="max", patience=p.patience)
        trainer = L.Trainer(
            max_epochs=p.epochs,
            accelerator="auto",
            devices=p.devices,
            num_nodes=p.num_nodes,
            strategy=p.strategy,
            logger=False,
            callbacks=[best, last, stop, History(), EpochProgress(f"{_kind(net)} classifier")],
            enable_model_summary=False,
            enable_checkpointing=True,
            num_sanity_val_steps=0,
            deterministic=DETERMINISTIC,
        )
        # One process: the batch order has its own generator, whatever else drew. Several:
        # Lightning's DistributedSampler orders (and shards) the rows from the seed instead;
        # a Generator cannot be sent to a ddp_spawn process (torch cannot share its state).
        order = torch.Generator().manual_seed(p.seed) if trainer.world_size == 1 else None
        trainer.fit(
            module,
            _loader(train, p.batch_size, shuffle=True, generator=order),
            _loader(val, 256),
        )
        if not trainer.is_global_zero:
            return FitResult(module.net.cpu().eval(), float("nan"), 0, is_global_zero=False)
        # The checkpoints are the run's record, also under ddp_spawn, whose callbacks ran in
        # the other processes: the network from best.ckpt, the curve from last.ckpt.
        ckpt = Path(ckpt_dir)
        state = torch.load(ckpt / "best.ckpt", map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
        rows = history_rows(torch.load(ckpt / "last.ckpt", map_location="cpu", weights_only=True))
    return FitResult(
        net=module.net.cpu().eval(),
        best_val_macro_recall=max((r["val_macro_recall"] for r in rows), default=0.0),
        epochs_run=len(rows),
        history=rows,
    )


def _kind(net: nn.Module) -> str:
    return getattr(net, "kind", "fusion")  # the ablations' PooledNet says which it is


def fit_on_group(
    build: Callable[[], nn.Module],
    store,
    y: torch.Tensor,
    split: np.ndarray,
    home: np.ndarray,
    p: TrainFusionConfig,
) -> FitResult:
    """Train ``build()`` on the train/val rows of one group only (the cross-group protocol).

    Args:
        build: makes the untrained network (called after seeding, see :func:`fit_classifier`).
        store: the feature store (:class:`~histoflow.embeddings.store.FeatureStore`).
        y: (N,) class indices of all rows.
        split: (N,) each row's split name.
        home: (N,) bool, the rows of the group trained on.
        p: the training recipe (the deployed model's).
    """
    train = FeatureRows(store, y, home & (split == "train"))
    val = FeatureRows(store, y, home & (split == "val"))
    return fit_classifier(build, train, val, p)
