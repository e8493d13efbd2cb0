"""Grad-CAM and attention rollout through the whole model (encoder -> tokens -> fusion)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from histoflow.evaluation.explain import explain_maps, select_tiles
from histoflow.models.encoder import create_encoder
from histoflow.models.fusion import FusionConfig, FusionNet


def _fusion(image_dim: int, tokens: int = 4) -> FusionNet:
    torch.manual_seed(0)
    cfg = FusionConfig(image_dim, 8, tokens, 3, width=16, layers=1, heads=2, classifier_heads=2)
    return FusionNet(cfg).eval()


def _inputs(b: int = 2):
    torch.manual_seed(1)
    return torch.randn(b, 3, 32, 32), torch.randn(b, 5, 8), torch.ones(b, 5, dtype=torch.bool)


class _Hybrid(nn.Module):
    """Two CNN branches whose feature maps are concatenated (the hybrid encoder's shape)."""

    def __init__(self):
        super().__init__()
        self.branches = nn.ModuleList(create_encoder("test_resnet") for _ in range(2))
        self.num_features = sum(b.num_features for b in self.branches)

    def forward_features(self, x):
        return torch.cat([b.forward_features(x) for b in self.branches], dim=1)

    def forward_head(self, f, pre_logits=True):
        return f.mean((2, 3))


def test_grad_cam_for_a_cnn_depends_on_the_target_class():
    encoder = create_encoder("test_resnet").eval()
    images, text, mask = _inputs()
    net = _fusion(encoder.num_features)
    ((name, maps0),) = explain_maps(encoder, net, 2, images, text, mask, [0, 0])
    ((_, maps2),) = explain_maps(encoder, net, 2, images, text, mask, [2, 2])
    assert name == "Grad-CAM" and maps0.shape == (2, 32, 32)
    assert maps0.min() >= 0 and maps0.max() <= 1 and maps0.std() > 0
    assert not np.allclose(maps0, maps2)


def test_attention_rollout_for_a_vit():
    encoder = create_encoder("test_vit").eval()
    images, text, mask = _inputs()
    ((name, maps),) = explain_maps(
        encoder, _fusion(encoder.num_features), 2, images, text, mask, [1, 1]
    )
    assert name == "attention rollout" and maps.shape == (2, 32, 32)
    assert maps.max() == 1 and maps.min() == 0  # normalised per image, not constant
    assert encoder.blocks[0].attn.fused_attn in (True, False)  # restored, not left patched


def test_one_panel_per_branch_of_a_hybrid_encoder():
    encoder = _Hybrid().eval()
    images, text, mask = _inputs()
    maps = explain_maps(encoder, _fusion(encoder.num_features), 2, images, text, mask, [0, 1])
    assert [n.split(" (")[0] for n, _ in maps] == ["Grad-CAM branch 0", "Grad-CAM branch 1"]
    assert all(m.shape == (2, 32, 32) for _, m in maps)


def test_select_tiles_takes_the_most_confident_correct_and_wrong_per_class():
    preds = pd.DataFrame(
        {
            "path": list("abcdef"),
            "label": ["x", "x", "x", "y", "y", "y"],
            "predicted": ["x", "x", "y", "y", "x", "x"],
            "prob_x": [0.6, 0.9, 0.3, 0.2, 0.8, 0.55],
            "prob_y": [0.4, 0.1, 0.7, 0.8, 0.2, 0.45],
        }
    )
    preds["correct"] = preds["label"] == preds["predicted"]
    assert sorted(select_tiles(preds, 1)["path"]) == ["b", "c", "d", "e"]
