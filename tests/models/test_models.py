"""Encoder factory, image tokens, the fusion network and its uncertainty."""

from __future__ import annotations

import pytest
import torch

from histoflow.models.encoder import create_encoder, encode_images
from histoflow.models.fusion import FusionConfig, FusionNet, head_disagreement


@pytest.mark.parametrize("name", ["test_resnet", "test_vit"])
def test_encoder_tokens_have_fixed_count(name):
    encoder = create_encoder(name).eval()
    size = encoder.default_cfg["input_size"][-1]
    pooled, tokens = encode_images(encoder, torch.randn(2, 3, size, size), grid=2)
    assert pooled.shape == (2, encoder.num_features)
    assert tokens.shape == (2, 4, encoder.num_features)


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(ValueError, match="did you mean.*resnet18"):
        create_encoder("resnet81")


def test_fusion_output_shape_and_text_mask():
    cfg = FusionConfig(
        image_dim=16,
        text_dim=8,
        image_tokens=4,
        num_classes=3,
        width=16,
        layers=1,
        heads=2,
        dropout=0.0,
        classifier_heads=4,
    )
    torch.manual_seed(0)
    net = FusionNet(cfg).eval()
    img, txt = torch.randn(5, 4, 16), torch.randn(5, 6, 8)
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[:, 3:] = False
    logits = net(img, txt, mask)
    assert logits.shape == (5, 4, 3)
    # Padded caption tokens must not change the answer.
    txt2 = txt.clone()
    txt2[:, 3:] = 100.0
    torch.testing.assert_close(net(img, txt2, mask), logits)
    # Real caption tokens must. (New content: a constant shift would vanish in the LayerNorm.)
    txt3 = txt.clone()
    txt3[:, 0] = torch.randn(5, 8, generator=torch.Generator().manual_seed(1)) * 3
    assert (net(img, txt3, mask) - logits).abs().max() > 1e-3


def test_head_disagreement():
    same = torch.tensor([[[0.7, 0.3], [0.7, 0.3]]])
    split = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert head_disagreement(same).item() == pytest.approx(0.0)
    assert head_disagreement(split).item() == pytest.approx(0.5)
