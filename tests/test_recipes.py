"""Recipes: applied onto the defaults into params.yaml, visible to DVC, recorded by MLflow."""

from __future__ import annotations

import shutil

import mlflow
import pytest
import yaml

from histoflow.config import ConfigError, load_params
from histoflow.dvc import ran_stages
from histoflow.recipes import apply_recipe, default_params, resolve_recipe
from histoflow.registry.tracking import use_tracking_uri


def test_repository_params_are_the_defaults(repo):
    # Recipes apply onto the defaults; the shipped params.yaml must be exactly those.
    assert load_params(repo / "params.yaml").model_dump(mode="json", by_alias=True) == (
        default_params()
    )


def test_apply_sets_recipe_keys_keeps_comments_and_is_idempotent(tmp_path, repo):
    params = tmp_path / "params.yaml"
    shutil.copy(repo / "params.yaml", params)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train_fusion: {lr: 0.0003, layers: 1}\nvalidate: {deduplicate: exact}\n")

    changed = apply_recipe(recipe, params)

    assert sorted(changed) == ["train_fusion.layers", "train_fusion.lr", "validate.deduplicate"]
    cfg = load_params(params)
    assert (cfg.train_fusion.lr, cfg.train_fusion.layers) == (0.0003, 1)
    assert cfg.validate.deduplicate == "exact"
    assert "# histoflow parameters: one section per dvc.yaml stage" in params.read_text()
    assert apply_recipe(recipe, params) == []


def test_apply_resets_keys_an_earlier_recipe_set(tmp_path, repo):
    params = tmp_path / "params.yaml"
    shutil.copy(repo / "params.yaml", params)
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("train_fusion: {layers: 1}\n")
    second.write_text("train_fusion: {heads: 2}\n")
    apply_recipe(first, params)
    assert sorted(apply_recipe(second, params)) == ["train_fusion.heads", "train_fusion.layers"]
    assert load_params(params).train_fusion.layers == default_params()["train_fusion"]["layers"]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("train_fusion: {lerning_rate: 0.1}\n", "train_fusion.lerning_rate"),
        ("train_fusion: {layers: -1}\n", "train_fusion.layers"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_bad_recipe_names_file_and_key_and_leaves_params_alone(tmp_path, text, named, repo):
    params = tmp_path / "params.yaml"
    shutil.copy(repo / "params.yaml", params)
    before = params.read_text()
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError) as err:
        apply_recipe(recipe, params)
    assert str(recipe) in str(err.value) and named in str(err.value)
    assert params.read_text() == before


def test_shipped_recipes_resolve(repo):
    recipes = sorted((repo / "recipes").glob("*.yaml"))
    assert {r.stem for r in recipes} >= {
        "brats_path",
        "breakhis_linear_probe",
        "brain_mri",
        "stroke_hybrid",
    }
    for recipe in recipes:
        resolve_recipe(recipe)


def test_dvc_exp_run_sweep_point_is_recorded_in_mlflow(tmp_path, reproduced_project, dvc):
    root = tmp_path / "project"
    shutil.copytree(reproduced_project, root, symlinks=True)

    out = dvc(root, "exp", "run", "-n", "lr-sweep-1", "-S", "train_fusion.lr=0.005")

    assert ran_stages(out) == ["params", "train_fusion", "evaluate"]  # params: the check
    assert yaml.safe_load((root / "params.yaml").read_text())["train_fusion"]["lr"] == 0.005
    use_tracking_uri(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(
        experiment_names=["histoflow"], filter_string="tags.`dvc.exp_name` = 'lr-sweep-1'"
    )
    every = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1, f"runs in {root}/mlruns: {every.filter(like='tags.').to_dict()}\n{out}"
    run = runs.iloc[0]
    assert run["params.train_fusion.lr"] == "0.005"
    assert 0.0 <= run["metrics.macro_recall"] <= 1.0
