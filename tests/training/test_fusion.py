"""The fusion fitting loop: the same rows and recipe give the same network, bit for bit."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from histoflow.config import TrainFusionConfig
from histoflow.evaluation.scoring import score_rows
from histoflow.inference import fuse
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
