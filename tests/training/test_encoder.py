"""The encoder's training wiring on tiny inputs: the sampler, the loss weights, resume or reset."""

from __future__ import annotations

import json

import torch

from histoflow.config import TrainEncoderConfig
from histoflow.training import checkpoints
from histoflow.training import encoder as train_encoder


def test_balanced_sampler_draws_classes_equally(tmp_path):
    labels = [0] * 60 + [1] * 15 + [2] * 5  # 12 : 3 : 1
    paths = [f"{i}.png" for i in range(len(labels))]  # never opened: only indices are drawn

    def shares(balanced: bool) -> torch.Tensor:
        p = TrainEncoderConfig(batch_size=16, balanced_sampler=balanced)
        loader = train_encoder.train_loader(p, tmp_path, paths, labels, 32)
        drawn = [labels[i] for _ in range(25) for batch in loader.batch_sampler for i in batch]
        return torch.bincount(torch.tensor(drawn), minlength=3) / len(drawn)

    torch.testing.assert_close(shares(True), torch.full((3,), 1 / 3), atol=0.04, rtol=0)
    torch.testing.assert_close(
        shares(False), torch.tensor([0.75, 0.1875, 0.0625]), atol=0.02, rtol=0
    )


def test_class_weighted_loss_weights_inverse_frequency():
    from histoflow.models.encoder import create_encoder

    p = TrainEncoderConfig(class_weighted_loss=True, label_smoothing=0.1)
    module = train_encoder.build_module(p, create_encoder("test_resnet"), 2, [0] * 6 + [1] * 2)
    torch.testing.assert_close(module.class_weights, torch.tensor([8 / 12, 8 / 4]))
    unweighted = train_encoder.build_module(
        TrainEncoderConfig(), create_encoder("test_resnet"), 2, [0] * 6 + [1] * 2
    )
    assert unweighted.class_weights is None


def test_resume_or_reset(tmp_path):
    folder = tmp_path / "ckpt"
    assert checkpoints.resume_or_reset(folder, "a", write=True) is None  # nothing yet
    (folder / "last.ckpt").write_bytes(b"x")
    assert checkpoints.resume_or_reset(folder, "a", write=True) == str(folder / "last.ckpt")
    assert checkpoints.resume_or_reset(folder, "b", write=True) is None  # other config/data
    assert not (folder / "last.ckpt").exists()
    (folder / "last.ckpt").write_bytes(b"x")
    (folder / "fingerprint.json").write_text(json.dumps({"fingerprint": "b", "complete": True}))
    assert checkpoints.resume_or_reset(folder, "b", write=True) is None  # finished: fresh
