"""``hybrid``: several timm backbones side by side, their features concatenated.

The stroke classifier concatenated ResNet50 and ViT-B/16 pooled features; this generalises
it to one or more branches. Each branch sees the image in its own normalisation
(:class:`~histoflow.models._common.InputNorm`).

Shapes for a batch of B images and ``grid = g``, with branch widths D1, D2, ...:

- ``forward`` / pooled: (B, D1 + D2 + ...), the branches' pooled features concatenated;
- tokens: (B, g*g, D1 + D2 + ...): each branch's token map pooled to the same g x g grid
  (CNN feature map or ViT patch tokens), concatenated along the feature axis, so token t
  describes the same image region in every branch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from histoflow.models._common import InputNorm, encode_timm

__all__ = ["HybridEncoder"]


class HybridEncoder(nn.Module):
    """Concatenation of timm backbones; ``branches`` and ``num_features`` as timm models have.

    Args:
        branches: timm models built with ``num_classes=0``.
        norms: per branch, the (mean, std) its weights expect.
    """

    def __init__(
        self,
        branches: Sequence[nn.Module],
        norms: Sequence[tuple[Sequence[float], Sequence[float]]],
    ):
        super().__init__()
        if not branches or len(branches) != len(norms):
            raise ValueError("a hybrid encoder needs one (mean, std) per branch, and a branch")
        self.branches = nn.ModuleList(branches)
        self.norms = nn.ModuleList(InputNorm(m, s) for m, s in norms)
        self.num_features = sum(int(b.num_features) for b in branches)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, sum D)."""
        return torch.cat([b(n(images)) for b, n in zip(self.branches, self.norms, strict=True)], -1)

    def encode(self, images: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled (B, sum D) and tokens (B, grid*grid, sum D)."""
        outs = [
            encode_timm(b, n(images), grid) for b, n in zip(self.branches, self.norms, strict=True)
        ]
        return torch.cat([p for p, _ in outs], -1), torch.cat([t for _, t in outs], -1)
