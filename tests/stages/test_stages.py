"""What each stage writes, checked on the session's tiny pipeline (one real ``dvc repro`` of
every stage's ``run``, shared with the other tests), plus ``validate``'s own failure paths.

Each test reads only the outputs of its stage, so any one of them passes alone.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from histoflow.embeddings.store import load_features
from histoflow.monitoring.reference import load_reference
from histoflow.stages import get_stage
from histoflow.stages.validate import ContractViolation


def _outputs(name, root):
    """The stage's default Outputs under the project ``root``."""
    cls = get_stage(name).Outputs
    return cls(**{f: root / getattr(cls(), f) for f in cls.__dataclass_fields__})


def _metrics(name, root) -> dict:
    return json.loads(_outputs(name, root).metrics.read_text())


def test_unknown_stage_suggests_the_name():
    with pytest.raises(ValueError, match="did you mean 'train_fusion'"):
        get_stage("train_fussion")


def test_validate(reproduced_project):
    out = _outputs("validate", reproduced_project)
    metrics = _metrics("validate", reproduced_project)
    manifest = pd.read_parquet(out.manifest)
    assert metrics["n_images"] == len(manifest) == 48
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert {"sha256", "phash", "bit_depth", "brightness", "od_hematoxylin", "readable"} <= set(
        manifest
    )
    assert manifest["readable"].all()
    assert json.loads(out.metrics.read_text())["n_classes"] == 3
    assert (out.report / "report.html").is_file() and (out.report / "results.json").is_file()


def _with_blank_tile(tiny_data, tmp_path):
    """A copy of the data with one tile replaced by an empty white one."""
    from PIL import Image

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    blank = sorted((data / "stroma").glob("*.png"))[0]
    Image.fromarray(np.full((32, 32, 3), 250, np.uint8)).save(blank)
    return data, blank.relative_to(data).as_posix()


@pytest.mark.parametrize("policy", ["keep", "exclude"])
def test_validate_blank_tiles_are_warned_and_kept_or_excluded(
    tiny_data, tiny_params, tmp_path, policy
):
    data, blank = _with_blank_tile(tiny_data, tmp_path)
    cfg = tiny_params.model_copy(
        update={"validate_": tiny_params.validate.model_copy(update={"qc_failures": policy})}
    )
    module = get_stage("validate")
    out = module.Outputs(
        manifest=tmp_path / "m.parquet",
        report=tmp_path / "report",
        metrics=tmp_path / "metrics.json",
    )
    metrics = module.run(cfg, module.Inputs(data=data), out)
    assert "blank" in metrics["warnings"]
    kept = set(pd.read_parquet(out.manifest)["path"])
    assert (blank in kept) is (policy == "keep")
    assert metrics["n_excluded"] == (policy == "exclude")
    assert blank in (out.report / "report.html").read_text()


def test_validate_failure_lists_files_and_keeps_last_good_manifest(
    tiny_data, tiny_params, tmp_path
):
    module = get_stage("validate")
    out = _outputs("validate", tmp_path)
    module.run(tiny_params, module.Inputs(data=tiny_data), out)
    before = out.manifest.read_bytes()
    broken = tmp_path / "data"
    shutil.copytree(tiny_data, broken)
    victim = next((broken / "stroma").glob("*.png"))
    victim.write_bytes(b"")  # a zero-byte tile, as a failed copy leaves
    inputs = get_stage("validate").Inputs(data=broken)
    with pytest.raises(ContractViolation) as err:
        get_stage("validate").run(tiny_params, inputs, out)
    assert victim.name in str(err.value)
    assert str(out.report / "report.html") in str(err.value)
    assert out.manifest.read_bytes() == before


def test_captions(tiny_data, tiny_params, tmp_path):
    validate, captions_stage = get_stage("validate"), get_stage("captions")
    validate.run(tiny_params, validate.Inputs(data=tiny_data), _outputs("validate", tmp_path))
    out = _outputs("captions", tmp_path)
    inputs = captions_stage.Inputs(data=tiny_data, manifest=tmp_path / validate.Outputs().manifest)
    metrics = captions_stage.run(tiny_params, inputs, out)
    captions = pd.read_csv(out.captions)
    assert metrics["n_images"] == len(captions) == 48
    assert captions["caption"].str.len().min() > 20
    assert captions["caption"].nunique() > 10  # captions describe each tile, not its class


def test_train_encoder(reproduced_project):
    out = _outputs("train_encoder", reproduced_project)
    metrics = _metrics("train_encoder", reproduced_project)
    assert (out.model / "weights.safetensors").is_file()
    meta = json.loads((out.model / "model.json").read_text())
    assert meta["backbone"] == "test_resnet" and meta["classes"] == [
        "adipose",
        "lymphocytes",
        "stroma",
    ]
    history = pd.read_csv(out.history)
    assert len(history) == metrics["epochs_run"] == 3
    assert {"train_loss", "val_loss", "val_macro_recall"} <= set(history.columns)


def test_embed(reproduced_project):
    tensors, meta, index = load_features(_outputs("embed", reproduced_project).features)
    assert tensors["image_tokens"].shape[:2] == (48, 4)  # token_grid 2 -> 4 tokens
    assert tuple(tensors["text_tokens"].shape) == (48, 32, 384)  # MiniLM width
    assert tensors["text_mask"].sum(1).min() > 2
    assert len(index) == 48 and meta["token_grid"] == "2"
    assert tensors["image_pooled"].dtype == torch.float16


def test_train_fusion(reproduced_project):
    out = _outputs("train_fusion", reproduced_project)
    metrics = _metrics("train_fusion", reproduced_project)
    assert (out.model / "weights.safetensors").is_file()
    assert 0.0 <= metrics["best_val_macro_recall"] <= 1.0
    assert len(pd.read_csv(out.history)) == metrics["epochs_run"]


def test_evaluate(reproduced_project):
    out = _outputs("evaluate", reproduced_project)
    saved = json.loads(out.metrics.read_text())
    for key in ("accuracy", "balanced_accuracy", "macro_recall", "macro_f1", "auroc"):
        assert 0.0 <= saved[key] <= 1.0, key
    assert set(saved["per_class_recall"]) == {"adipose", "lymphocytes", "stroma"}
    # On this easy 3-class set the fused model must beat chance (1/3) clearly.
    assert saved["macro_recall"] > 0.5
    predictions = pd.read_csv(out.predictions)
    assert {"path", "label", "predicted", "prob_stroma", "uncertainty", "site", "correct"} <= set(
        predictions
    )
    assert predictions.filter(like="prob_").sum(axis=1).round(4).eq(1).all()
    assert (out.plots / "confusion_matrix.png").stat().st_size > 5_000
    assert (out.plots / "training_curves.png").is_file()
    assert "site" in saved["by_group"]
    # Calibration before/after and conformal sets at the model's alpha (#14).
    cal = saved["calibration"]
    assert cal["temperature"] > 0 and {"ece", "brier", "nll", "ci"} <= set(cal["after"])
    assert saved["conformal"]["alpha"] == 0.1
    assert set(saved["conformal"]["per_class"]) == set(saved["per_class_recall"])
    assert {"prediction_set", "set_size", "covered"} <= set(predictions)
    assert (out.trust / "reliability_before_after.png").is_file()
    # The encoder's frozen features probed as eva compares encoders (#13), in the report too.
    probes = saved["probes"]
    assert set(probes["results"]) == {"linear", "knn20", "fewshot_1", "fewshot_5", "fewshot_10"}
    assert probes["n_test"] == len(predictions) and probes["seeds"] == [0, 1]
    for name, result in probes["results"].items():
        assert len(result["per_seed_macro_recall"]) == 2, name
        assert 0.0 <= result["macro_recall"] <= 1.0, name
    assert probes["results"]["linear"]["macro_recall"] > 0.5  # the trained encoder separates
    report = (out.report / "index.html").read_text()
    assert "Encoder probes: frozen test_resnet features" in report
    rows = [report.index(f"<td>{p}</td>") for p in ("linear", "knn20", "fewshot_1", "fewshot_10")]
    assert rows == sorted(rows)  # in the order the field reads them, not evaluate.json's


def test_reference(reproduced_project):
    folder = _outputs("reference", reproduced_project).reference
    summary = json.loads((folder / "reference.json").read_text())
    ref = load_reference(folder, _outputs("evaluate", reproduced_project).predictions)
    features = ref.data.features
    assert len(features) == summary["n_features"] and {"brightness", "od_eosin"} <= set(features)
    embeddings = ref.data.embeddings
    assert list(embeddings.columns) == [f"pc_{i}" for i in range(summary["pca_components"])]
    assert len(embeddings) == summary["n_held_out"]
    # Principal axes are orthonormal, so projecting new batches is a plain matrix product.
    np.testing.assert_allclose(
        ref.components @ ref.components.T, np.eye(len(ref.components)), atol=1e-4
    )
    # A batch's embeddings land in the same PCA space as the held-out ones.
    tensors, _, index = load_features(_outputs("embed", reproduced_project).features)
    held_out = index["split"].isin(["val", "test"]).to_numpy()
    projected = ref.project(tensors["image_pooled"].float().numpy()[held_out])
    np.testing.assert_allclose(projected.to_numpy(), embeddings.to_numpy(), atol=1e-3)
