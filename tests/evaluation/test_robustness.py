"""The robustness certificate: seeded perturbations, drops from clean, the worst case, the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
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


@pytest.mark.slow
def test_stain_augmentation_shrinks_the_stain_shift_drop(tiny_data):
    """The tiny encoder trained on the built-in tiles with and without HED stain jitter.

    The training transforms, network factory and perturbation are histoflow's own; the loop is a
    plain one (about 10 s per model), where the Lightning stage would cost a minute per model.
    """
    import torch.nn.functional as F

    from histoflow.config import AugmentConfig, TrainEncoderConfig
    from histoflow.data.images import load_rgb
    from histoflow.data.transforms import create_transform
    from histoflow.metrics import macro_recall
    from histoflow.models.encoder import create_encoder_from_params

    manifest = pd.read_csv(tiny_data / "manifest.csv")
    classes = sorted(manifest["label"].unique())
    y = np.array([classes.index(c) for c in manifest["label"]])
    images = [load_rgb(tiny_data / p) for p in manifest["path"]]
    held_out = np.arange(len(y)) % 3 == 0
    train, test = np.flatnonzero(~held_out), np.flatnonzero(held_out)
    shifted = [perturb(images[i], "stain", 0.5, seed=[0, int(i)]) for i in test]
    evaluate = create_transform(32, train=False)

    def drop(stain_scale: float, stain_shift: float) -> float:
        torch.manual_seed(0)
        augment = AugmentConfig(
            brightness=0, contrast=0, saturation=0, stain_scale=stain_scale, stain_shift=stain_shift
        )
        transform = create_transform(32, train=True, augment=augment)
        encoder = create_encoder_from_params(
            TrainEncoderConfig(backbone="test_resnet", pretrained=False)
        )
        net = torch.nn.Sequential(encoder, torch.nn.Linear(encoder.num_features, len(classes)))
        opt = torch.optim.AdamW(net.parameters(), 3e-3)
        for epoch in range(12):
            order = np.random.default_rng(epoch).permutation(train)
            for b in range(0, len(order), 16):
                idx = order[b : b + 16]
                x = torch.stack([transform(images[i]) for i in idx])
                loss = F.cross_entropy(net(x), torch.from_numpy(y[idx]))
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            clean = net(torch.stack([evaluate(images[i]) for i in test])).argmax(1).numpy()
            moved = net(torch.stack([evaluate(im) for im in shifted])).argmax(1).numpy()
        return macro_recall(y[test], moved, 3) - macro_recall(y[test], clean, 3)

    without, with_jitter = drop(0.0, 0.0), drop(0.5, 0.1)
    assert without < with_jitter - 0.15, (without, with_jitter)


def test_leave_one_group_out_finds_the_site_the_others_do_not_prepare_for(tmp_path, feature_store):
    """Sites a and b share a feature space; site c's image features are scrambled."""
    from histoflow.config import TrainFusionConfig
    from histoflow.evaluation.leave_one_out import leave_one_group_out
    from histoflow.models.fusion import FusionConfig

    g = torch.Generator().manual_seed(0)
    n, per_site = 144, 48
    y = torch.arange(n) % 3
    site = np.repeat(["site_a", "site_b", "site_c"], per_site)
    centres = torch.randn(3, 8, generator=g) * 3
    image = centres[y] + torch.randn(n, 8, generator=g) * 0.5  # (N, D)
    c = torch.from_numpy(site == "site_c")
    image[c] = image[c][:, torch.randperm(8, generator=g)]  # another scanner: features move
    tensors = feature_store(
        tmp_path,
        {
            "image_tokens": image[:, None, :].repeat(1, 2, 1),  # (N, 2, D)
            "text_tokens": torch.zeros(n, 2, 4),
            "text_mask": torch.ones(n, 2, dtype=torch.bool),
        },
    )
    split = np.array(["train", "train", "val", "test"] * (n // 4))
    index = pd.DataFrame({"split": split, "site": site})
    p = TrainFusionConfig(width=16, layers=1, heads=2, classifier_heads=1, epochs=6, batch_size=16)
    net_cfg = FusionConfig.from_params(p, image_dim=8, text_dim=4, image_tokens=2, num_classes=3)
    test = split == "test"
    clean = np.eye(3)[y[test].numpy()]  # a deployed model that knew every site: all correct
    result = leave_one_group_out(tensors, index, y, "site", clean, net_cfg, p, resamples=50, seed=0)
    groups = result["groups"]
    assert set(groups) == {"site_a", "site_b", "site_c"}
    assert groups["site_c"]["n"] == per_site // 4 and groups["site_c"]["n_train"] == 48
    assert groups["site_c"]["drop"] < groups["site_a"]["drop"] - 0.2, groups
    rows = {"clean": {"macro_recall": 1.0, "ci": [1, 1], "drop": 0.0}}
    worst = worst_case(rows, result)
    assert worst["perturbation"] == "leave_out:site" and worst["strength"] == "site_c"
    section = robustness_section(
        {
            "n": 36,
            "models": {"fusion": rows},
            "worst": worst,
            "leave_one_group_out": result,
        }
    )
    assert "Leave one site out" in section and "site_c" in section
    assert leave_one_group_out(
        tensors, index, y, "scanner", clean, net_cfg, p, resamples=50, seed=0
    ) == {"column": "scanner", "skipped": "the manifest has no column 'scanner'"}


def test_evaluate_certifies_the_deployed_model_and_its_ablations(reproduced_project):
    """The session pipeline (tiny params: one stain shift) wrote the certificate everywhere."""
    import json

    from histoflow.registry.tracking import evaluation_metrics
    from histoflow.stages import evaluate

    out = evaluate.Outputs()
    saved = json.loads((reproduced_project / out.metrics).read_text())
    robustness = saved["robustness"]
    assert set(robustness["models"]) == {"fusion", "image_only", "text_only", "concat"}
    stain = robustness["models"]["fusion"]["stain"]["0.5"]
    clean = robustness["models"]["fusion"]["clean"]
    assert stain["drop"] == pytest.approx(stain["macro_recall"] - clean["macro_recall"])
    assert saved["worst_case_macro_recall"] == min(stain["macro_recall"], clean["macro_recall"])
    assert evaluation_metrics(saved)["worst_case_macro_recall"] == saved["worst_case_macro_recall"]
    page = (reproduced_project / out.report / "index.html").read_text()
    assert "Robustness certificate" in page and "stain 0.5" in page
    assert (reproduced_project / out.report / "img" / "robustness.png").is_file()


def test_a_large_test_split_is_certified_on_a_stratified_draw(
    reproduced_project, tiny_params, tmp_path
):
    # Each certified image is re-captioned and re-embedded once per condition: above
    # evaluate.robustness.max_images a seeded, class-stratified draw keeps the cost flat.
    from histoflow.stages import evaluate

    p = tiny_params.evaluate
    cheap = p.model_copy(
        update={
            "robustness": p.robustness.model_copy(update={"max_images": 10}),
            "cross_group": None,
            "explain_per_class": 0,
            "probes": None,
        }
    )
    inputs = evaluate.Inputs(
        **{k: reproduced_project / v for k, v in vars(evaluate.Inputs()).items()}
    )
    outputs = evaluate.Outputs(**{k: tmp_path / v for k, v in vars(evaluate.Outputs()).items()})
    saved = evaluate.run(tiny_params.model_copy(update={"evaluate": cheap}), inputs, outputs)

    robustness = saved["robustness"]
    assert saved["n"] == 12 and robustness["n"] < 12 and robustness["drawn_from"] == 12
    assert robustness["n"] >= 9  # about 10: every class in proportion, each at least once
    assert (
        "a seeded draw, stratified by class, of the 12"
        in (outputs.report / "index.html").read_text()
    )
