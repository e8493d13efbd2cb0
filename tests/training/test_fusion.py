"""The fusion fitting loop: the same rows and recipe give the same network, bit for bit; DDP."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from histoflow.config import TrainFusionConfig
from histoflow.evaluation.scoring import score_rows
from histoflow.inference import fuse
from histoflow.metrics import macro_recall
from histoflow.models.ablations import create_classifier
from histoflow.models.fusion import FusionConfig
from histoflow.training.fusion import FeatureRows, feature_dataset, fit_classifier

NET = FusionConfig(
    image_dim=8, text_dim=6, image_tokens=4, num_classes=3, width=16, layers=1, heads=2
)
RECIPE = TrainFusionConfig(width=16, layers=1, heads=2, epochs=3, batch_size=8, patience=3)


def _tensors(n: int = 24) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "image_tokens": torch.randn(n, 4, 8, generator=g).half(),
        "text_tokens": torch.randn(n, 5, 6, generator=g).half(),
        "text_mask": torch.rand(n, 5, generator=g) > 0.3,
    }


def _rows():
    tensors = _tensors()
    y = torch.arange(24) % 3
    split = torch.arange(24) % 4 == 0  # every fourth row validates
    return feature_dataset(tensors, y, ~split), feature_dataset(tensors, y, split)


def _weights(result) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in result.net.state_dict().items()}


def test_fit_classifier_is_bit_for_bit_repeatable_and_follows_the_seed():
    train, val = _rows()
    build = partial(create_classifier, "fusion", NET)
    torch.manual_seed(1)  # whatever ran before must not matter: the net is built after seeding
    first = fit_classifier(build, train, val, RECIPE)
    torch.rand(17)
    second = fit_classifier(build, train, val, RECIPE)
    assert first.history == second.history
    a, b = _weights(first), _weights(second)
    assert all(torch.equal(a[k], b[k]) for k in a)

    other = _weights(fit_classifier(build, train, val, RECIPE.model_copy(update={"seed": 7})))
    assert not all(torch.equal(a[k], other[k]) for k in a)


def test_store_reads_any_rows_in_any_order(tmp_path, feature_store):
    tensors = _tensors()
    store = feature_store(tmp_path, tensors)
    rows = np.array([5, 3, 4, 23, 0, 4, 6, 7])  # unsorted, a repeat, runs, both ends
    for name, t in tensors.items():
        assert np.array_equal(store.read(name, rows), t.numpy()[rows]), name
    assert store.dims() == {"image_dim": 8, "text_dim": 6, "image_tokens": 4}


def test_streamed_rows_train_and_score_exactly_as_rows_in_memory(tmp_path, feature_store):
    tensors = _tensors()
    store = feature_store(tmp_path, tensors)
    y = torch.arange(24) % 3
    split = (torch.arange(24) % 4 == 0).numpy()
    build = partial(create_classifier, "fusion", NET)

    in_memory = fit_classifier(build, *_rows(), RECIPE)  # the pre-streaming path
    streamed = fit_classifier(
        build, FeatureRows(store, y, ~split), FeatureRows(store, y, split), RECIPE
    )
    assert streamed.history == in_memory.history  # the same batches in the same order
    a, b = _weights(in_memory), _weights(streamed)
    assert all(torch.equal(a[k], b[k]) for k in a)

    expected = fuse(in_memory.net, *(tensors[k] for k in tensors), 5)
    got = score_rows(streamed.net, store, np.arange(24), 5)
    assert all(np.array_equal(e, g) for e, g in zip(expected, got, strict=True))


def test_fusion_trains_on_two_processes(tmp_path, feature_store):
    # train_fusion under the encoder's Lightning strategies (#12): two CPU processes (DDP over
    # gloo, ddp_spawn) train from the store's rows and hand back the best network and its
    # curve, which ran in the other processes (the checkpoints carry them back).
    n = 96
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    image = torch.randn(n, 4, 8, generator=g) * 0.5
    image[:, :, :3] += 2 * torch.nn.functional.one_hot(y, 3)[:, None, :].float()  # separable
    tensors = {
        "image_tokens": image.half(),
        "text_tokens": torch.randn(n, 5, 6, generator=g).half(),
        "text_mask": torch.rand(n, 5, generator=g) > 0.3,
    }
    store = feature_store(tmp_path, tensors)
    val = (torch.arange(n) % 4 == 0).numpy()
    recipe = RECIPE.model_copy(update={"epochs": 4, "patience": 4})
    two = recipe.model_copy(update={"devices": 2, "strategy": "ddp_spawn"})
    build = partial(create_classifier, "fusion", NET)

    result = fit_classifier(build, FeatureRows(store, y, ~val), FeatureRows(store, y, val), two)

    assert result.is_global_zero and result.epochs_run == 4
    assert [row["epoch"] for row in result.history] == [0, 1, 2, 3]
    assert result.best_val_macro_recall == max(r["val_macro_recall"] for r in result.history)
    probs, _ = score_rows(result.net, store, np.flatnonzero(val), 16)
    recall = macro_recall(y.numpy()[val], probs.argmax(1), 3)
    # The network handed back is the best epoch's: it scores what that epoch recorded.
    assert recall == pytest.approx(result.best_val_macro_recall, abs=1e-6) and recall > 0.9
