"""Ablations of the fusion network, and one way to build or load any of them.

Each ablation takes the same inputs as :class:`~histoflow.models.fusion.FusionNet` (image tokens,
caption tokens, caption mask) and returns the same (B, K, C) per-head logits, so training,
``fuse`` and evaluation treat every variant alike. They differ only in what they read:

- ``image_only``: the mean of the image tokens (the pooled image embedding) -> MLP;
- ``text_only``: the masked mean of the caption tokens -> MLP;
- ``concat``: both pooled vectors concatenated -> MLP (late fusion without attention);
- ``fusion``: the cross-attention transformer, the deployed model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from histoflow.models.checkpoint import read_model_json
from histoflow.models.fusion import FusionConfig, FusionNet

__all__ = ["ABLATIONS", "KINDS", "PooledNet", "create_classifier", "load_classifier"]

ABLATIONS = ("image_only", "text_only", "concat")
KINDS = ("fusion", *ABLATIONS)


class PooledNet(nn.Module):
    """Pooled image and/or caption embedding -> two-layer MLP -> K classifier heads."""

    def __init__(self, cfg: FusionConfig, kind: str):
        super().__init__()
        if kind not in ABLATIONS:
            raise ValueError(f"unknown ablation {kind!r}; expected one of {', '.join(ABLATIONS)}")
        self.cfg, self.kind = cfg, kind
        dim = {
            "image_only": cfg.image_dim,
            "text_only": cfg.text_dim,
            "concat": cfg.image_dim + cfg.text_dim,
        }[kind]
        w = cfg.width
        self.body = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, w), nn.GELU(), nn.Dropout(cfg.dropout)
        )
        self.heads = nn.ModuleList(
            nn.Linear(w, cfg.num_classes) for _ in range(cfg.classifier_heads)
        )

    def forward(
        self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, T, Di), (B, L, Dt), (B, L) -> per-head logits (B, K, C)."""
        parts = []
        if self.kind in ("image_only", "concat"):
            parts.append(image_tokens.mean(1))  # (B, Di)
        if self.kind in ("text_only", "concat"):
            m = text_mask.unsqueeze(-1).to(text_tokens.dtype)  # (B, L, 1)
            parts.append((text_tokens * m).sum(1) / m.sum(1).clamp(min=1))  # (B, Dt)
        h = self.body(torch.cat(parts, dim=1))  # (B, W)
        return torch.stack([head(h) for head in self.heads], dim=1)


def create_classifier(kind: str, cfg: FusionConfig) -> nn.Module:
    """The network for ``kind`` (``fusion`` or one of :data:`ABLATIONS`)."""
    if kind == "fusion":
        return FusionNet(cfg)
    return PooledNet(cfg, kind)


def load_classifier(folder: Path) -> tuple[nn.Module, dict]:
    """Any trained variant's network (eval mode) and its description, from its model folder."""
    meta = read_model_json(folder)
    net = create_classifier(meta.get("kind", "fusion"), FusionConfig(**meta["config"]))
    net.load_state_dict(load_file(Path(folder) / "weights.safetensors"))
    return net.eval(), meta
