"""Cross-attention fusion of image tokens and caption tokens, with a multi-head classifier."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from histoflow.config import TrainFusionConfig

__all__ = ["FusionConfig", "FusionNet", "head_disagreement"]


@dataclass(frozen=True)
class FusionConfig:
    """The fusion network's shape: input widths from the features, the rest from params."""

    image_dim: int
    text_dim: int
    image_tokens: int
    num_classes: int
    width: int = 128
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    classifier_heads: int = 5
    # one_way: image tokens attend to the caption; two_way: the caption also attends back to the
    # image tokens in every block. Older model folders have no key and load as one_way.
    attention: str = "one_way"

    @classmethod
    def from_params(
        cls,
        p: TrainFusionConfig,
        *,
        image_dim: int,
        text_dim: int,
        image_tokens: int,
        num_classes: int,
    ) -> FusionConfig:
        """The network ``train_fusion`` params describe, for features of the given widths."""
        return cls(
            image_dim=image_dim,
            text_dim=text_dim,
            image_tokens=image_tokens,
            num_classes=num_classes,
            width=p.width,
            layers=p.layers,
            heads=p.heads,
            dropout=p.dropout,
            classifier_heads=p.classifier_heads,
            attention=p.attention,
        )

    def to_dict(self) -> dict:
        """The fields as a plain dict (what ``model.json`` records)."""
        return asdict(self)


class _Block(nn.Module):
    """Self-attention over [cls, image tokens], then cross-attention from them to the caption.

    With ``two_way`` the caption tokens first attend to the image tokens (and get an MLP), so
    each side is updated by the other before the image side reads the caption.
    """

    def __init__(self, width: int, heads: int, dropout: float, two_way: bool = False):
        super().__init__()
        self.two_way = two_way
        if two_way:
            self.norm_t = nn.LayerNorm(width)
            self.norm_t_kv = nn.LayerNorm(width)
            self.text_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
            self.norm_t_mlp = nn.LayerNorm(width)
            self.text_mlp = _mlp(width, dropout)
        self.norm_self = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm_q = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = _mlp(width, dropout)

    def forward(
        self, x: torch.Tensor, text: torch.Tensor, text_pad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """X (B, 1+T, W) image side, text (B, L, W); returns both, updated."""
        if self.two_way:
            kv = self.norm_t_kv(x)
            text = text + self.text_attn(self.norm_t(text), kv, kv, need_weights=False)[0]
            text = text + self.text_mlp(self.norm_t_mlp(text))
        h = self.norm_self(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        kv = self.norm_kv(text)
        x = (
            x
            + self.cross_attn(
                self.norm_q(x), kv, kv, key_padding_mask=text_pad, need_weights=False
            )[0]
        )
        return x + self.mlp(self.norm_mlp(x)), text


def _mlp(width: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * width, width)
    )


class FusionNet(nn.Module):
    """Image tokens attend to caption tokens; K classifier heads read the fused cls token."""

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.image_proj = nn.Sequential(nn.LayerNorm(cfg.image_dim), nn.Linear(cfg.image_dim, w))
        self.text_proj = nn.Sequential(nn.LayerNorm(cfg.text_dim), nn.Linear(cfg.text_dim, w))
        self.cls = nn.Parameter(torch.zeros(1, 1, w))
        self.pos = nn.Parameter(torch.zeros(1, 1 + cfg.image_tokens, w))
        nn.init.trunc_normal_(self.pos, std=0.02)
        if cfg.attention not in ("one_way", "two_way"):
            raise ValueError(f"attention must be one_way or two_way, got {cfg.attention!r}")
        two_way = cfg.attention == "two_way"
        self.blocks = nn.ModuleList(
            _Block(w, cfg.heads, cfg.dropout, two_way) for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(w)
        self.dropout = nn.Dropout(cfg.dropout)
        self.heads = nn.ModuleList(
            nn.Linear(w, cfg.num_classes) for _ in range(cfg.classifier_heads)
        )

    def forward(
        self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        """Per-head logits.

        Args:
            image_tokens: (B, T, Di).
            text_tokens: (B, L, Dt).
            text_mask: (B, L) bool, True for real tokens.

        Returns:
            logits (B, K, C) for K classifier heads.
        """
        x = self.image_proj(image_tokens)  # (B, T, W)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos  # (B, 1+T, W)
        text = self.text_proj(text_tokens)  # (B, L, W)
        pad = ~text_mask.bool()
        pad[:, 0] = False  # an empty caption must not leave attention with nothing to attend to
        for block in self.blocks:
            x, text = block(x, text, pad)
        fused = self.dropout(self.norm(x[:, 0]))  # (B, W)
        return torch.stack([head(fused) for head in self.heads], dim=1)


def head_disagreement(head_probs: torch.Tensor) -> torch.Tensor:
    """Uncertainty from K heads: mean total-variation distance of each head to their mean, in [0, 1].

    Args:
        head_probs: (B, K, C) per-head class probabilities.

    Returns:
        (B,) disagreement; 0 when all heads agree exactly.
    """
    mean = head_probs.mean(dim=1, keepdim=True)
    return 0.5 * (head_probs - mean).abs().sum(-1).mean(-1)
