"""``embed``: streamed fp16 output equals a direct forward; the per-encoder image cache."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from histoflow.config import TrainEncoderConfig
from histoflow.data.datasets import TileDataset
from histoflow.data.transforms import create_transform
from histoflow.embeddings.store import SafetensorsStream, load_features
from histoflow.models.checkpoint import load_encoder, model_fingerprint, save_model
from histoflow.models.encoder import create_encoder_from_params, encode_images, encoder_description
from histoflow.stages import get_stage
from histoflow.stages.embed import Inputs, Outputs, run


def _save_encoder(folder, seed: int) -> None:
    """An untrained test_resnet model folder, as train_encoder writes it (weights from ``seed``)."""
    torch.manual_seed(seed)
    p = TrainEncoderConfig(backbone="test_resnet", pretrained=False)
    encoder = create_encoder_from_params(p)
    save_model(folder, encoder, {**encoder_description(p, encoder), "image_size": 32})


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_data, tiny_params):
    """validate + captions outputs on the tiny data, and two different encoders."""
    root = tmp_path_factory.mktemp("embed")
    shutil.copytree(tiny_data, root / "data")
    for name in ("validate", "captions"):
        module = get_stage(name)
        re_root = lambda cls: {f: root / getattr(cls(), f) for f in cls.__dataclass_fields__}  # noqa: E731
        module.run(
            tiny_params,
            module.Inputs(**re_root(module.Inputs)),
            module.Outputs(**re_root(module.Outputs)),
        )
    _save_encoder(root / "encoder_a", seed=0)
    _save_encoder(root / "encoder_b", seed=1)
    return root


def _cfg(tiny_params, **embed):
    return tiny_params.model_copy(
        update={"embed": tiny_params.embed.model_copy(update={"precision": "32", **embed})}
    )


def _inputs(root, encoder="encoder_a", captions="outputs/captions/captions.csv") -> Inputs:
    return Inputs(
        data=root / "data",
        manifest=root / "outputs/validate/manifest.parquet",
        captions=root / captions,
        encoder=root / encoder,
    )


def test_streamed_features_equal_a_direct_forward(project, tiny_params, tmp_path, capsys):
    out = Outputs(features=tmp_path / "embed")
    metrics = run(_cfg(tiny_params, num_workers=2, batch_size=20), _inputs(project), out)
    tensors, meta, index = load_features(out.features)
    # Morphology captions run past the tiny max_text_tokens (32): counted and warned about.
    # A cut caption fills every token position.
    filled = tensors["text_mask"].all(1).tolist()
    full = {c for c, m in zip(index["caption"], filled, strict=True) if m}
    assert 0 < metrics["n_truncated_captions"] <= len(full)
    assert "longer than embed.max_text_tokens=32 tokens" in capsys.readouterr().err
    assert metrics["n_new_image_embeddings"] == 48 and len(index) == 48
    assert meta["encoder_sha256"] == model_fingerprint(project / "encoder_a")
    assert all(t.dtype in (torch.float16, torch.bool) for t in tensors.values())

    encoder, _ = load_encoder(project / "encoder_a")
    data = TileDataset(
        project / "data", index["path"].tolist(), None, create_transform(32, train=False)
    )
    with torch.inference_mode():
        pooled, tokens = encode_images(encoder, torch.stack([data[i][0] for i in range(48)]), 2)
    torch.testing.assert_close(tensors["image_pooled"].float(), pooled, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(tensors["image_tokens"].float(), tokens, atol=2e-3, rtol=2e-3)
    assert tensors["text_tokens"].shape == (48, 32, 384) and tensors["text_mask"].any(1).all()


def test_same_encoder_reuses_image_embeddings_and_a_new_one_recomputes(
    project, tiny_params, tmp_path
):
    cfg, out = _cfg(tiny_params, num_workers=0), Outputs(features=tmp_path / "embed")
    first = run(cfg, _inputs(project), out)
    images = load_features(out.features)[0]["image_tokens"]

    # Only the captions change: image embeddings come from the cache, texts are re-encoded.
    captions = pd.read_csv(project / "outputs/captions/captions.csv")
    captions["caption"] = "A tile of tissue, " + captions["caption"]
    captions.to_csv(tmp_path / "captions.csv", index=False)
    second = run(cfg, _inputs(project, captions=tmp_path / "captions.csv"), out)
    tensors, meta, _ = load_features(out.features)
    assert (first["n_new_image_embeddings"], second["n_new_image_embeddings"]) == (48, 0)
    assert second["n_new_text_embeddings"] > 0
    assert torch.equal(tensors["image_tokens"], images)

    third = run(cfg, _inputs(project, encoder="encoder_b"), out)
    tensors, new_meta, _ = load_features(out.features)
    assert third["n_new_image_embeddings"] == 48
    assert new_meta["encoder_sha256"] != meta["encoder_sha256"]
    assert not torch.equal(tensors["image_tokens"], images)


def test_safetensors_stream_writes_rows_in_any_order(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((10, 3, 4)).astype(np.float16)
    m = rng.random((10, 5)) > 0.5
    path = tmp_path / "x.safetensors"
    layout = {"a": (np.float16, a.shape), "m": (np.bool_, m.shape)}
    with SafetensorsStream(path, layout, {"k": 1}) as out:
        for s in (8, 0, 4):  # uneven chunks, out of order
            out.write("a", s, a[s : s + 4])
            out.write("m", s, m[s : s + 4])
        with pytest.raises(ValueError, match="do not fit"):
            out.write("a", 9, a[:2])
    with safe_open(path, framework="np") as fh:
        assert np.array_equal(fh.get_tensor("a"), a) and np.array_equal(fh.get_tensor("m"), m)
        assert fh.metadata() == {"k": "1"}
