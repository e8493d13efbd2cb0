"""Backbone kinds: pinned offline weights (timm and transformers), the hybrid, name errors."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save_file

from histoflow.config import TrainEncoderConfig
from histoflow.models.checkpoint import load_encoder, save_model
from histoflow.models.encoder import (
    create_encoder,
    create_encoder_from_params,
    encode_images,
    encoder_description,
)
from histoflow.models.foundation import hash_weights

_X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # normalised images


def _as(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """ImageNet-normalised images re-normalised with a backbone's own statistics."""
    raw = images * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) + torch.tensor(
        [0.485, 0.456, 0.406]
    ).view(1, 3, 1, 1)
    return (raw - mean) / std


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _round_trip(p: TrainEncoderConfig, encoder, folder):
    """Save as train_encoder does, load as embed does; return the loaded encoder."""
    save_model(folder, encoder, {**encoder_description(p, encoder), "image_size": 32})
    loaded, meta = load_encoder(folder)
    assert meta["num_features"] == encoder.num_features
    return loaded


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory):
    """A tiny timm model's weights (with a classifier head, as hub files have) as safetensors."""
    torch.manual_seed(1)
    source = create_encoder("test_resnet")
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    state["fc.weight"] = torch.zeros(5, source.num_features)  # dropped: the encoder is headless
    path = tmp_path_factory.mktemp("timm") / "tiny.safetensors"
    save_file(state, path)
    return path, source.eval()


def test_timm_weights_with_pinned_hash_load(timm_weights, tmp_path):
    path, source = timm_weights
    p = TrainEncoderConfig(backbone="test_resnet", weights=path, weights_sha256=_sha(path))
    encoder = create_encoder_from_params(p).eval()
    with torch.no_grad():
        # The file's weights, not a fresh init, seeing the 0.5/0.5 input test_resnet expects.
        assert torch.allclose(encoder(_X), source(_as(_X, 0.5, 0.5)), atol=1e-6)
        desc = encoder_description(p, encoder)
        assert desc["weights_sha256"] == _sha(path) and desc["pretrained"]
        # test_resnet's pretrained statistics are 0.5/0.5: recorded, and converted to inside.
        assert desc["branches"][0]["mean"] == [0.5, 0.5, 0.5]
        loaded = _round_trip(p, encoder, tmp_path / "model")
        assert torch.allclose(loaded(_X), encoder(_X))


def test_torch_weights_are_read_without_unpickling_code(timm_weights, tmp_path):
    _, source = timm_weights
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    p = TrainEncoderConfig(backbone="test_resnet", weights=path, weights_sha256=_sha(path))
    with torch.no_grad():
        assert torch.allclose(
            create_encoder_from_params(p).eval()(_X), source(_as(_X, 0.5, 0.5)), atol=1e-6
        )


def test_wrong_hash_refuses_to_load_and_says_which_file(timm_weights):
    path, _ = timm_weights
    wrong = "0" * 64
    p = TrainEncoderConfig(backbone="test_resnet", weights=path, weights_sha256=wrong)
    with pytest.raises(ValueError, match="refusing to load") as err:
        create_encoder_from_params(p)
    assert str(path) in str(err.value) and wrong in str(err.value) and _sha(path) in str(err.value)
    unpinned = TrainEncoderConfig(backbone="test_resnet", weights=path)
    with pytest.raises(ValueError, match=f"weights_sha256: {_sha(path)}"):
        create_encoder_from_params(unpinned)


@pytest.fixture(scope="module")
def dinov2_folder(tmp_path_factory):
    """A tiny transformers DINOv2 saved with save_pretrained, as Midnight's hub folder is laid out."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(2)
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    folder = tmp_path_factory.mktemp("hf") / "midnight"
    model = Dinov2Model(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model


def test_transformers_weights_load_offline_with_the_model_cards_pooling(dinov2_folder, tmp_path):
    folder, model = dinov2_folder
    p = TrainEncoderConfig(
        backbone="kaiko-ai/midnight", weights=folder, weights_sha256=hash_weights(folder)
    )
    encoder = create_encoder_from_params(p).eval()
    with torch.no_grad():
        pooled, tokens = encode_images(encoder, _X, grid=2)
        # Midnight's card: CLS + mean patch token, on images normalised with mean = std = 0.5.
        hidden = model(pixel_values=_as(_X, 0.5, 0.5)).last_hidden_state  # (2, 1 + 16, 32)
        expected = torch.cat([hidden[:, 0], hidden[:, 1:].mean(1)], -1)
        assert torch.allclose(pooled, expected, atol=1e-5)
        assert pooled.shape == (2, 64) and tokens.shape == (2, 4, 32)
        assert encoder.num_features == 64
        loaded = _round_trip(p, encoder, tmp_path / "model")
        assert torch.allclose(encode_images(loaded, _X, 2)[1], tokens, atol=1e-5)


def test_transformers_folder_with_changed_file_refuses(dinov2_folder, tmp_path):
    import shutil

    folder, _ = dinov2_folder
    pinned = hash_weights(folder)
    copy = shutil.copytree(folder, tmp_path / "midnight")
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("32", "33", 1))
    p = TrainEncoderConfig(backbone="kaiko-ai/midnight", weights=copy, weights_sha256=pinned)
    with pytest.raises(ValueError, match=f"expected {pinned}, actual {hash_weights(copy)}"):
        create_encoder_from_params(p)


def test_hybrid_concatenates_branches_and_round_trips(tmp_path):
    p = TrainEncoderConfig(
        backbone="hybrid", branches=("test_resnet", "test_vit"), pretrained=False
    )
    encoder = create_encoder_from_params(p).eval()
    widths = [b.num_features for b in encoder.branches]
    assert encoder.num_features == sum(widths) and len(widths) == 2
    with torch.no_grad():
        pooled, tokens = encode_images(encoder, _X, grid=2)  # the ViT branch at 32 px, too
        assert pooled.shape == (2, sum(widths)) and tokens.shape == (2, 4, sum(widths))
        assert torch.equal(encoder(_X), pooled)
        # Feature axis: the first branch's columns are the ResNet's own pooled features.
        assert torch.allclose(pooled[:, : widths[0]], encoder.branches[0](_X))
        loaded = _round_trip(p, encoder, tmp_path / "model")
        assert [type(b).__name__ for b in loaded.branches] == ["ResNet", "VisionTransformer"]
        assert torch.allclose(encode_images(loaded, _X, 2)[1], tokens, atol=1e-6)


@pytest.mark.parametrize(
    ("backbone", "hint"),
    [("test_resnt", "test_resnet"), ("hybird", "hybrid"), ("hf-hub:MahmoodLab/UNl", "UNI")],
)
def test_unknown_names_suggest_close_matches(backbone, hint):
    with pytest.raises(ValueError, match="train_encoder.backbone") as err:
        create_encoder_from_params(TrainEncoderConfig(backbone=backbone, pretrained=False))
    assert hint in str(err.value)


def test_foundation_model_without_weights_says_how_to_get_them():
    with pytest.raises(ValueError, match="weights_sha256"):
        create_encoder_from_params(
            TrainEncoderConfig(backbone="kaiko-ai/midnight", pretrained=False)
        )
