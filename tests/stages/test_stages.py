"""Each stage's pure ``run`` on tiny data, in pipeline order, sharing one working folder."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from safetensors import safe_open

from histoflow.stages import STAGE_NAMES, get_stage
from histoflow.stages.validate import ContractViolation


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp("stages")
    shutil.copytree(tiny_data, root / "data")
    return root


def _io(name, root):
    """The stage's default Inputs/Outputs re-rooted under ``root``."""
    module = get_stage(name)
    fields = lambda cls: {f: root / getattr(cls(), f) for f in cls.__dataclass_fields__}  # noqa: E731
    return module.Inputs(**fields(module.Inputs)), module.Outputs(**fields(module.Outputs))


def _run(name, cfg, root):
    inputs, outputs = _io(name, root)
    return get_stage(name).run(cfg, inputs, outputs), outputs


def test_unknown_stage_suggests_the_name():
    with pytest.raises(ValueError, match="did you mean 'train_fusion'"):
        get_stage("train_fussion")


def test_validate(workdir, tiny_params):
    metrics, out = _run("validate", tiny_params, workdir)
    manifest = pd.read_parquet(out.manifest)
    assert metrics["n_images"] == len(manifest) == 48
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert {"sha256", "phash", "bit_depth", "brightness", "od_hematoxylin", "readable"} <= set(
        manifest
    )
    assert manifest["readable"].all()
    assert json.loads(out.metrics.read_text())["n_classes"] == 3
    assert (out.report / "report.html").is_file() and (out.report / "results.json").is_file()


def _with_blank_tile(workdir, tmp_path):
    """A copy of the data with one tile replaced by an empty white one."""
    import numpy as np
    from PIL import Image

    data = tmp_path / "data"
    shutil.copytree(workdir / "data", data)
    blank = sorted((data / "stroma").glob("*.png"))[0]
    Image.fromarray(np.full((32, 32, 3), 250, np.uint8)).save(blank)
    return data, blank.relative_to(data).as_posix()


@pytest.mark.parametrize("policy", ["keep", "exclude"])
def test_validate_blank_tiles_are_warned_and_kept_or_excluded(
    workdir, tiny_params, tmp_path, policy
):
    data, blank = _with_blank_tile(workdir, tmp_path)
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


def test_validate_failure_lists_files_and_keeps_last_good_manifest(workdir, tiny_params, tmp_path):
    _, out = _run("validate", tiny_params, workdir)
    before = out.manifest.read_bytes()
    broken = tmp_path / "data"
    shutil.copytree(workdir / "data", broken)
    victim = next((broken / "stroma").glob("*.png"))
    victim.write_bytes(b"")  # a zero-byte tile, as a failed copy leaves
    inputs = get_stage("validate").Inputs(data=broken)
    with pytest.raises(ContractViolation) as err:
        get_stage("validate").run(tiny_params, inputs, out)
    assert victim.name in str(err.value)
    assert str(out.report / "report.html") in str(err.value)
    assert out.manifest.read_bytes() == before


def test_captions(workdir, tiny_params):
    metrics, out = _run("captions", tiny_params, workdir)
    captions = pd.read_csv(out.captions)
    assert metrics["n_images"] == len(captions) == 48
    assert captions["caption"].str.len().min() > 20
    assert captions["caption"].nunique() > 10  # captions describe each tile, not its class


def test_train_encoder(workdir, tiny_params):
    metrics, out = _run("train_encoder", tiny_params, workdir)
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


def test_embed(workdir, tiny_params):
    _run("embed", tiny_params, workdir)
    folder = workdir / "outputs/embed"
    with safe_open(folder / "features.safetensors", framework="pt") as fh:
        assert fh.get_tensor("image_tokens").shape[:2] == (48, 4)  # token_grid 2 -> 4 tokens
        assert tuple(fh.get_tensor("text_tokens").shape) == (48, 32, 384)  # MiniLM width
        assert fh.get_tensor("text_mask").sum(1).min() > 2
    assert len(pd.read_csv(folder / "index.csv")) == 48


def test_train_fusion(workdir, tiny_params):
    metrics, out = _run("train_fusion", tiny_params, workdir)
    assert (out.model / "weights.safetensors").is_file()
    assert 0.0 <= metrics["best_val_macro_recall"] <= 1.0
    assert len(pd.read_csv(out.history)) == metrics["epochs_run"]


def test_evaluate(workdir, tiny_params):
    _, out = _run("evaluate", tiny_params, workdir)
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


def test_stage_names_match_modules():
    for name in STAGE_NAMES:
        module = get_stage(name)
        assert callable(module.run) and module.PARAMS


def test_reference(workdir, tiny_params):
    import numpy as np
    from safetensors.numpy import load_file

    summary, out = _run("reference", tiny_params, workdir)
    folder = out.reference
    features = pd.read_parquet(folder / "features.parquet")
    assert len(features) == summary["n_features"] and {"brightness", "od_eosin"} <= set(features)
    embeddings = pd.read_parquet(folder / "embeddings.parquet")
    assert list(embeddings.columns) == [f"pc_{i}" for i in range(summary["pca_components"])]
    assert len(embeddings) == summary["n_held_out"]
    pca = load_file(folder / "pca.safetensors")
    # Principal axes are orthonormal, so projecting new batches is a plain matrix product.
    np.testing.assert_allclose(
        pca["components"] @ pca["components"].T, np.eye(len(pca["components"])), atol=1e-4
    )
