"""Image encoders: one factory over timm, and one way to turn images into tokens."""

from __future__ import annotations

import difflib

import timm
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["create_encoder", "encode_images"]


def create_encoder(name: str, *, pretrained: bool = False) -> nn.Module:
    """Build a timm backbone without a classifier head (``num_classes=0``).

    Raises:
        ValueError: for an unknown model name, suggesting close matches.
    """
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise ValueError(f"train_encoder.backbone: unknown timm model {name!r}{hint}")
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0)
    except (OSError, RuntimeError) as exc:
        if not pretrained:
            raise
        raise RuntimeError(
            f"cannot load pretrained weights for {name!r} ({exc}); this machine may be offline: "
            "set train_encoder.pretrained: false, or put the weights in the Hugging Face cache"
        ) from None


def encode_images(
    encoder: nn.Module, images: torch.Tensor, grid: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled embedding and a fixed number of image tokens for a batch.

    Args:
        encoder: a timm backbone from :func:`create_encoder`.
        images: (B, 3, H, W) normalised images.
        grid: tokens are pooled to ``grid * grid`` per image.

    Returns:
        pooled (B, D) and tokens (B, grid*grid, D).
    """
    features = encoder.forward_features(images)
    pooled = encoder.forward_head(features, pre_logits=True)  # (B, D)
    if features.ndim == 4:  # CNN: (B, C, H, W), channels-first unless the model says otherwise
        if features.shape[1] != pooled.shape[1]:
            features = features.permute(0, 3, 1, 2)  # NHWC models (e.g. some convnexts)
        tokens = F.adaptive_avg_pool2d(features, grid).flatten(2).transpose(1, 2)
    else:  # ViT-like: (B, N, D), prefix tokens (cls, registers) first
        patches = features[:, getattr(encoder, "num_prefix_tokens", 0) :]
        tokens = F.adaptive_avg_pool1d(patches.transpose(1, 2), grid * grid).transpose(1, 2)
    return pooled, tokens.contiguous()
