"""Pieces every backbone kind shares: input re-normalisation and timm image tokens."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from histoflow.data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["InputNorm", "encode_timm"]


class InputNorm(nn.Module):
    """Turn ImageNet-normalised images (histoflow's transform) into a backbone's own normalisation.

    ``x_raw = x * s_in + m_in`` and ``x_out = (x_raw - m) / s``, folded into one affine map per
    channel. The constants are non-persistent buffers: they come from the description, not
    the weights file.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        m_in, s_in = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        m, s = torch.tensor(tuple(mean)), torch.tensor(tuple(std))
        self.register_buffer("scale", (s_in / s).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((m_in - m) / s).view(1, 3, 1, 1), persistent=False)
        self.identity = bool(torch.allclose(m, m_in) and torch.allclose(s, s_in))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return images
        return images * self.scale.to(images.dtype) + self.shift.to(images.dtype)


def encode_timm(
    model: nn.Module, images: torch.Tensor, grid: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled (B, D) and ``grid * grid`` tokens (B, T, D) of a timm backbone without head."""
    features = model.forward_features(images)
    pooled = model.forward_head(features, pre_logits=True)  # (B, D)
    if features.ndim == 4:  # CNN: (B, C, H, W), channels-first unless the model says otherwise
        if features.shape[1] != pooled.shape[1]:
            features = features.permute(0, 3, 1, 2)  # NHWC models (e.g. some convnexts)
        tokens = F.adaptive_avg_pool2d(features, grid).flatten(2).transpose(1, 2)
    else:  # ViT-like: (B, N, D), prefix tokens (cls, registers) first
        patches = features[:, getattr(model, "num_prefix_tokens", 0) :]
        tokens = F.adaptive_avg_pool1d(patches.transpose(1, 2), grid * grid).transpose(1, 2)
    return pooled, tokens.contiguous()
