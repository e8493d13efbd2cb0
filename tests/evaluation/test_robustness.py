"""The robustness certificate: seeded perturbations, drops from clean, the worst case, the report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from histoflow.evaluation.robustness import certificate, perturb, worst_case
from histoflow.evaluation.robustness_report import plot_robustness, robustness_section
from histoflow.metrics import bootstrap_weights


def _tile(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(60, 230, (32, 32, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("kind", "strength"),
    [("stain", 0.5), ("jpeg", 10), ("blur", 2.0), ("rescale", 0.5), ("rescale", 2.0)],
)
def test_each_perturbation_changes_the_image_keeps_its_size_and_repeats_with_its_seed(
    kind, strength
):
    image = _tile()
    out = perturb(image, kind, strength, seed=[0, 1])
    assert out.size == image.size and out.mode == "RGB"
    assert not np.array_equal(np.asarray(out), np.asarray(image))
    assert np.array_equal(np.asarray(out), np.asarray(perturb(image, kind, strength, seed=[0, 1])))
    with pytest.raises(ValueError, match="unknown perturbation 'fog'"):
        perturb(image, "fog", 1.0)


def test_certificate_measures_each_drop_and_names_the_worst_case(tmp_path):
    """A 'model' that reads the mean red of each image: stain shifts and JPEG move it."""
    n = 24
    y = np.arange(n) % 2
    images = [_tile(i) for i in range(n)]
    for i, im in enumerate(images):  # class 1 tiles are redder
        a = np.asarray(im).copy()
        a[..., 0] = 200 if y[i] else 100
        images[i] = Image.fromarray(a)

    def features(batch):
        red = torch.tensor([np.asarray(b)[..., 0].mean() / 255 for b in batch])  # (B,)
        return red[:, None, None], torch.zeros(len(batch), 1, 1), torch.ones(len(batch), 1)

    def score(image_tokens, text_tokens, text_mask):
        red = image_tokens[:, 0, 0].numpy()
        p1 = (red > 0.6).astype(float)
        return np.stack([1 - p1, p1], 1), None

    result = certificate(
        features,
        {"fusion": score, "blind": lambda *t: (np.full((len(t[0]), 2), 0.5), None)},
        images.__getitem__,
        y,
        [("stain", 0.1), ("stain", 1.5), ("blur", 1.0)],
        weights=bootstrap_weights(n, 50, 0),
        batch_size=10,
    )
    fusion = result["models"]["fusion"]
    assert fusion["clean"]["macro_recall"] == 1.0 and fusion["clean"]["drop"] == 0.0
    assert fusion["blur"]["1"]["drop"] == 0.0  # a uniform red channel does not blur
    assert fusion["stain"]["1.5"]["drop"] < fusion["stain"]["0.1"]["drop"] <= 0.0
    assert fusion["stain"]["1.5"]["ci"][0] <= fusion["stain"]["1.5"]["macro_recall"]
    worst = worst_case(fusion)
    assert worst["perturbation"] == "stain" and worst["strength"] == "1.5"
    assert worst["macro_recall"] == fusion["stain"]["1.5"]["macro_recall"] < 1.0
    result["worst"] = worst
    html = robustness_section(result)
    assert "Robustness certificate" in html and "stain 1.5" in html and "blind" in html
    assert plot_robustness(result, tmp_path / "robustness.png").stat().st_size > 1000
