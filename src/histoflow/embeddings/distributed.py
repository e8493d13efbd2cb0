"""Embedding images on several processes or machines: Lightning's ``Trainer.predict``.

Why Lightning and not Ray Data: the encoder is already trained with Lightning's strategies
(``train_encoder.devices / num_nodes / strategy``), so the same params, launchers (torchrun,
SLURM, ``ddp_spawn`` on one machine) and process groups (NCCL on GPUs, gloo on CPUs) serve
inference too, with no second cluster runtime to deploy. Each rank embeds its share of the
images (Lightning's distributed sampler) and a :class:`ShardWriter` writes every batch it
finishes to its own shard file (positions, pooled, tokens in float16); rank 0 then moves the
shards into the per-image cache, one shard at a time, so memory stays one batch per process.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from safetensors.numpy import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from histoflow.data.datasets import TileDataset
from histoflow.embeddings.cache import ImageEmbeddingCache
from histoflow.inference import ImageEmbedder
from histoflow.models.encoder import encode_images

__all__ = ["ShardWriter", "embed_missing_distributed"]


class _Positions(Dataset):
    """A tile dataset's items as (image, position): the writer keys rows by position."""

    def __init__(self, tiles: TileDataset):
        self.tiles = tiles

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.tiles[i][0], i


class _EncoderPredictor(L.LightningModule):
    def __init__(self, encoder: torch.nn.Module, grid: int):
        super().__init__()
        self.encoder, self.grid = encoder, grid

    def predict_step(self, batch, batch_idx: int):
        images, positions = batch
        images = images.contiguous(memory_format=torch.channels_last)
        pooled, tokens = encode_images(self.encoder, images, self.grid)  # (B, D), (B, T, Dt)
        return positions, pooled.float(), tokens.float()


class ShardWriter(BasePredictionWriter):
    """Writes each finished batch to ``folder/rank<R>-<batch>.safetensors`` (atomically).

    Args:
        folder: the shard folder, shared by every rank (a shared file system across machines).
    """

    def __init__(self, folder: Path):
        super().__init__(write_interval="batch")
        self.folder = Path(folder)

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        """Write one batch's rows: positions (B,), pooled (B, D), tokens (B, T, Dt)."""
        positions, pooled, tokens = prediction
        name = f"rank{trainer.global_rank:03d}-{batch_idx:07d}.safetensors"
        tmp = self.folder / f".{name}.tmp"
        save_file(
            {
                "positions": positions.cpu().numpy().astype(np.int64),
                "pooled": pooled.cpu().half().numpy(),
                "tokens": tokens.cpu().half().numpy(),
            },
            tmp,
        )
        os.replace(tmp, self.folder / name)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        """Every rank's shards are on disk before rank 0 reads them."""
        trainer.strategy.barrier()


def embed_missing_distributed(
    embedder: ImageEmbedder,
    cache: ImageEmbeddingCache,
    root: Path,
    paths: list[str],
    hashes: list[str],
    *,
    batch_size: int,
    num_workers: int,
    devices: int | str,
    num_nodes: int,
    strategy: str,
) -> int:
    """:func:`~histoflow.embeddings.cache.embed_missing` on ``devices`` x ``num_nodes`` processes.

    Args:
        embedder: the trained encoder (its accelerator and precision are used).
        cache: the per-image cache the shards are moved into (by rank 0).
        root: the folder ``paths`` are relative to.
        paths: every image's path (duplicates by content allowed).
        hashes: every image's sha256, aligned with ``paths``.
        batch_size: images per forward pass on each process.
        num_workers: decoding processes per rank.
        devices: processes (CPU) or GPUs per machine.
        num_nodes: machines.
        strategy: a Lightning strategy: ``ddp_spawn`` (one machine, started from this
            process), ``ddp`` (under torchrun or SLURM, or launched by Lightning).

    Returns:
        How many images were embedded; 0 on ranks other than 0, which stop here under a
        launcher that runs the whole stage on every rank (``ddp``).
    """
    todo = cache.missing(hashes)
    if not todo:
        return 0
    first_path = dict(zip(reversed(hashes), reversed(paths), strict=True))  # hash -> first path
    tiles = TileDataset(
        root,
        [first_path[h] for h in todo],
        None,
        embedder.transform,
        max_pixels=embedder.max_pixels,
    )
    loader = DataLoader(
        _Positions(tiles),
        batch_size=batch_size,
        num_workers=num_workers,
        multiprocessing_context="forkserver" if num_workers else None,
    )
    shards = Path(tempfile.mkdtemp(prefix=".embed-shards-", dir=cache.path.parent))
    trainer = L.Trainer(
        accelerator={"cuda": "gpu"}.get(embedder.device.type, embedder.device.type),
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision="bf16-mixed" if embedder.bf16 else "32-true",
        callbacks=[ShardWriter(shards)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = _EncoderPredictor(embedder.encoder.cpu().float(), embedder.grid)
    trainer.predict(module, loader, return_predictions=False)
    if not trainer.is_global_zero:
        raise SystemExit(0)  # a launched rank: its shards are written, rank 0 finishes
    try:
        done = set()
        for shard in sorted(shards.glob("rank*.safetensors")):
            rows = load_file(shard)
            keep = [i for i, p in enumerate(rows["positions"].tolist()) if p not in done]
            positions = rows["positions"][keep]  # the sampler may repeat rows to even the ranks
            cache.put([todo[p] for p in positions], rows["pooled"][keep], rows["tokens"][keep])
            done.update(positions.tolist())
    finally:
        for shard in shards.iterdir():
            shard.unlink()
        shards.rmdir()
    if len(done) != len(todo):
        raise RuntimeError(
            f"distributed embed returned {len(done)} of {len(todo)} images; check that every "
            f"rank can read {root} and write {shards.parent}"
        )
    return len(done)
