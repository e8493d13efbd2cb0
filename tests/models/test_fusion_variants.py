"""Two-way attention and the ablation networks share FusionNet's inputs and outputs."""

from __future__ import annotations

import pytest
import torch

from histoflow.models.ablations import KINDS, create_classifier, load_classifier
from histoflow.models.checkpoint import save_model
from histoflow.models.fusion import FusionConfig

CFG = FusionConfig(12, 8, 4, 3, width=16, layers=2, heads=2, classifier_heads=3)


def _batch():
    torch.manual_seed(0)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 2:] = False
    return torch.randn(2, 4, 12), torch.randn(2, 5, 8), mask


@pytest.mark.parametrize("kind", KINDS)
def test_every_variant_gives_per_head_logits_and_round_trips(kind, tmp_path):
    net = create_classifier(kind, CFG).eval()
    x = _batch()
    assert net(*x).shape == (2, 3, 3)
    save_model(tmp_path / kind, net, {"config": CFG.to_dict(), "kind": kind})
    loaded, meta = load_classifier(tmp_path / kind)
    assert meta["kind"] == kind and torch.allclose(loaded(*x), net(*x))


def test_text_only_ignores_the_image_and_image_only_the_caption():
    image, text, mask = _batch()
    text_only = create_classifier("text_only", CFG).eval()
    image_only = create_classifier("image_only", CFG).eval()
    assert torch.equal(text_only(image, text, mask), text_only(image * 5, text, mask))
    assert torch.equal(image_only(image, text, mask), image_only(image, text * 5, mask))
    # padded caption tokens are masked out of the text mean
    padded = text.clone()
    padded[1, 2:] = 99
    assert torch.allclose(text_only(image, padded, mask), text_only(image, text, mask))


def test_two_way_attention_lets_the_caption_read_the_image():
    one = create_classifier("fusion", CFG)
    two = create_classifier("fusion", FusionConfig(**{**CFG.to_dict(), "attention": "two_way"}))
    assert sum(p.numel() for p in two.parameters()) > sum(p.numel() for p in one.parameters())
    assert two.eval()(*_batch()).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="one_way or two_way"):
        create_classifier("fusion", FusionConfig(**{**CFG.to_dict(), "attention": "both"}))
