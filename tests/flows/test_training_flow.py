"""The training flow under Prefect's test harness, registering in a SQLite MLflow."""

from __future__ import annotations

import shutil

import pytest
import yaml
from mlflow.tracking import MlflowClient

from histoflow import dvc
from histoflow.registry import tracking_uri
from histoflow.registry.tracking import use_tracking_uri


def _client(root) -> MlflowClient:
    use_tracking_uri(tracking_uri(root))
    return MlflowClient()


def _spy_repro(monkeypatch) -> list[str]:
    """The stages the flow asks DVC to reproduce (the real `dvc repro` still runs)."""
    calls, real = [], dvc.repro
    monkeypatch.setattr(
        dvc, "repro", lambda stage, *a, **k: calls.append(stage) or real(stage, *a, **k)
    )
    return calls


def test_first_run_registers_champion(trained_project):
    client = _client(trained_project)
    champion = client.get_model_version_by_alias("histoflow", "champion")
    challenger = client.get_model_version_by_alias("histoflow", "challenger")
    assert str(champion.version) == str(challenger.version) == "1"
    assert champion.tags["promotion.decision"] == "promoted"
    run = client.get_run(champion.run_id)
    assert {"macro_recall", "accuracy", "auroc"} <= set(run.data.metrics)
    assert run.data.params["train_fusion.width"] == "32"
    assert run.data.tags["git_commit"]
    assert any(tag.startswith("dvc.md5.outputs/train_fusion/model") for tag in run.data.tags)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"params.yaml", "dvc.lock", "metrics", "plots"} <= artifacts
    assert (trained_project / "mlruns" / "mlflow.db").is_file()


def test_worse_model_does_not_take_champion(
    tmp_path, trained_project, prefect_harness, monkeypatch, flow_module
):
    root = tmp_path / "project"
    shutil.copytree(trained_project, root, symlinks=True)
    # The copied SQLite store records absolute artifact paths of the original; that is fine:
    # they still exist, and new runs write under the copy's own mlruns/.
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train_fusion"].update(lr=0.0, epochs=1, patience=1)  # an untrained fusion model
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stages = _spy_repro(monkeypatch)
    result = flow_module("training").training(root=str(root))

    assert stages == dvc.stage_order(root)  # dvc status saw the change: every stage asked
    assert result["version"] == "2" and result["promoted"] is False
    assert result["challenger_value"] < result["champion_value"]
    client = _client(root)
    assert str(client.get_model_version_by_alias("histoflow", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("histoflow", "challenger").version) == "2"
    assert "does not beat" in client.get_model_version("histoflow", "2").tags["promotion.reason"]


def test_rerun_with_nothing_changed_registers_no_duplicate(
    tmp_path, trained_project, prefect_harness, monkeypatch, flow_module
):
    root = tmp_path / "project"
    shutil.copytree(trained_project, root, symlinks=True)
    stages = _spy_repro(monkeypatch)
    result = flow_module("training").training(root=str(root))

    assert stages == []  # one `dvc status` found nothing changed: no stage process started
    assert result["unchanged"] is True and result["version"] == "1", result
    assert "dvc.lock hashes equal those of v1" in result["reason"]
    client = _client(root)
    assert [str(v.version) for v in client.search_model_versions("name = 'histoflow'")] == ["1"]
    assert str(client.get_model_version_by_alias("histoflow", "champion").version) == "1"


def test_bad_params_fail_before_any_stage_runs(
    tmp_path, trained_project, prefect_harness, flow_module
):
    root = tmp_path / "project"
    shutil.copytree(trained_project, root, symlinks=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train_fusion"]["layerz"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    lock_before = (root / "dvc.lock").read_text()
    with pytest.raises(Exception, match="train_fusion.layerz: unknown key"):
        flow_module("training").training(root=str(root))
    assert (root / "dvc.lock").read_text() == lock_before
