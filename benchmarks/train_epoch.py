"""One training epoch of ``train_encoder``'s LightningModule + Trainer against a bare PyTorch loop.

Both sides train the same timm backbone (fresh, same seed) with a linear head on the same
synthetic tiles, through the stage's own training DataLoader (same augmentation, batch size
and workers), with the same dtype (bf16 autocast where :func:`histoflow.device.use_bf16` says
so), AdamW, per-step warm-up + cosine schedule, label-smoothed cross-entropy and gradient
clipping. The Lightning side is :func:`histoflow.training.encoder.build_module` and
``build_trainer`` (validation and checkpoint files off, so both do the same work). Each repeat
runs both, in alternating order; the ratio is bare epoch time / Lightning epoch time of the same
repeat (1.0 = no overhead). Target (issue #5): at least 0.85.
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from _harness import main, tiles  # benchmarks/ is on sys.path

from histoflow.config import TrainEncoderConfig
from histoflow.device import autocast, pick_device, use_bf16
from histoflow.models.encoder import create_encoder
from histoflow.training.encoder import build_module, build_trainer, train_loader
from histoflow.training.optim import adamw, warmup_cosine

TARGET_RATIO = 0.85
SIZE = 64  # tile side in pixels


def run(quick: bool = False, repeats: int = 3) -> list[dict]:
    """Time one epoch both ways, ``repeats`` times.

    Full: resnet18 on 4 classes x 64 tiles; quick: test_resnet on 4 x 16.
    """
    backbone = "test_resnet" if quick else "resnet18"
    per_class = 16 if quick else 64
    p = TrainEncoderConfig(
        backbone=backbone, pretrained=False, batch_size=32, epochs=1, warmup_epochs=0.5
    )
    device = pick_device(p.accelerator)
    bf16 = use_bf16(device, p.precision)
    lightning_s, bare_s = [], []
    with tempfile.TemporaryDirectory(prefix="train_epoch_") as tmp:
        table = tiles(Path(tmp) / "data", 4 * per_class, size=SIZE, classes=4)
        classes = sorted(set(table["label"]))
        paths = table["path"].tolist()
        labels = [classes.index(label) for label in table["label"]]
        loader = functools.partial(train_loader, p, Path(tmp) / "data", paths, labels, SIZE)
        _bare_epoch(p, loader(), len(classes), device, bf16, max_steps=2)  # warm-up kernels
        for i in range(repeats):
            order = (
                [_lightning_epoch, _bare_epoch] if i % 2 == 0 else [_bare_epoch, _lightning_epoch]
            )
            for fn in order:
                seconds = fn(p, loader(), len(classes), device, bf16)
                (lightning_s if fn is _lightning_epoch else bare_s).append(seconds)
    n = len(paths)
    notes = (
        f"{backbone}, {n} tiles of {SIZE} px, batch {p.batch_size}, "
        f"{'bf16 autocast' if bf16 else 'fp32'} on {device.type}"
    )
    return [
        {
            "figure": "train epoch, Lightning (stage module + Trainer)",
            "unit": "s",
            "samples": lightning_s,
            "notes": notes,
        },
        {
            "figure": "train epoch, bare PyTorch loop",
            "unit": "s",
            "samples": bare_s,
            "notes": notes,
        },
        {
            "figure": "train epoch speed, Lightning / bare loop",
            "unit": "ratio",
            "samples": [b / li for b, li in zip(bare_s, lightning_s, strict=True)],
            "target": f">= {TARGET_RATIO}",
            "notes": notes,
        },
    ]


def _lightning_epoch(p, loader, num_classes, device, bf16) -> float:
    torch.manual_seed(0)
    labels = [int(y) for y in loader.dataset.labels]
    module = build_module(p, create_encoder(p.backbone), num_classes, labels)
    timer = _EpochTimer()
    trainer = build_trainer(
        p,
        device,
        bf16,
        callbacks=[timer],
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, loader)
    return timer.seconds


def _bare_epoch(p, loader, num_classes, device, bf16, max_steps: int | None = None) -> float:
    torch.manual_seed(0)
    encoder = create_encoder(p.backbone)
    model = torch.nn.Sequential(encoder, torch.nn.Linear(encoder.num_features, num_classes))
    model.to(device).train()
    opt = adamw(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)  # as the stage
    total = len(loader)
    warmup = round(p.warmup_epochs * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, functools.partial(warmup_cosine, warmup_steps=warmup, total_steps=total)
    )
    started = time.perf_counter()
    for step, (images, y, _) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        images, y = images.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, bf16):
            loss = F.cross_entropy(model(images), y, label_smoothing=p.label_smoothing)
        if not torch.isfinite(loss):  # the stage checks every step too
            raise FloatingPointError(f"loss {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if p.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)
        opt.step()
        sched.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


class _EpochTimer(L.Callback):
    """Wall time of the training epoch alone (not the Trainer's set-up and tear-down)."""

    def on_train_epoch_start(self, trainer, module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self._start


if __name__ == "__main__":
    sys.exit(main(__doc__))
