"""Optimiser and learning-rate schedule shared by every training loop."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["adamw", "decay_groups", "warmup_cosine"]


def adamw(params, *, fused: bool = True, **kwargs) -> torch.optim.AdamW:
    """AdamW, fused (one kernel over all parameters) unless asked not to or not possible.

    Not possible: parameters on a device other than CPU/CUDA, or not floating point.

    On CPU, torch's default per-tensor AdamW took 50 ms a step for resnet18's 11M parameters
    here, the fused one 11 ms (4.5x). Lightning will not clip gradients itself for a fused
    optimiser (it assumes a gradient scaler unscales inside the step): modules that train
    with it clip in ``on_before_optimizer_step``.
    """
    params = list(params)
    tensors = [t for g in params for t in (g["params"] if isinstance(g, dict) else [g])]
    fused = (
        fused
        and bool(tensors)
        and all(t.device.type in ("cpu", "cuda") and t.is_floating_point() for t in tensors)
    )
    return torch.optim.AdamW(params, fused=fused, **kwargs)


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor at optimiser ``step``: linear warm-up to 1, then cosine to 0.

    Step 0 already gets ``1 / (warmup_steps + 1)`` so that the first update is not wasted.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    decay = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def decay_groups(module: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """AdamW parameter groups of ``module``: weights decayed, biases and norm weights not."""
    # Biases and norm weights (1-D) are not decayed: decay would only shrink their scale.
    params = list(module.parameters())
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
