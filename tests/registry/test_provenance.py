"""The provenance chain of a champion: its commit, its data, and the command that restores it."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from histoflow import dvc as dvc_adapter
from histoflow.cli import main
from histoflow.registry import status

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]


def _git(root, *args) -> str:
    return subprocess.run(
        [*GIT, *args], cwd=root, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.slow
def test_status_names_the_commit_whose_checkout_restores_the_champion(
    tmp_path, trained_project, tiny_params, dvc, monkeypatch, capsys
):
    root = tmp_path / "project"
    shutil.copytree(trained_project, root, symlinks=True)
    run_commit = _git(root, "rev-parse", "HEAD")
    locked = dvc_adapter.lock_hashes(root)

    champion = status(tiny_params.registry, root)["champion"]
    # The run wrote dvc.lock and metrics/: not a change of its inputs, so not "-dirty".
    assert champion["git_commit"] == run_commit
    assert champion["data_hash"] == locked["data"]
    assert champion["state_commit"] is None and champion["checkout"] is None

    _git(root, "add", "dvc.lock", "metrics")
    _git(root, "commit", "-qm", "trained")
    pinned = _git(root, "rev-parse", "HEAD")
    champion = status(tiny_params.registry, root)["champion"]
    assert champion["state_commit"] == pinned
    assert champion["checkout"] == f"git checkout {pinned} && dvc checkout"
    monkeypatch.chdir(root)
    assert main(["registry", "status"]) == 0
    out = capsys.readouterr().out
    assert f"state: git checkout {pinned} && dvc checkout" in out
    assert f"code: commit {run_commit}   data: md5 {locked['data']}" in out

    # Work moves on, as a later run would leave it: new params and new predictions, recorded
    # by DVC and committed; and the model folder deleted by hand.
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train_fusion"]["dropout"] = 0.3
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    predictions = root / "outputs/evaluate/predictions.csv"
    original = predictions.read_bytes()
    predictions.write_text("path,label\n")
    dvc(root, "commit", "--force", "evaluate")
    _git(root, "commit", "-qam", "try more dropout")
    assert dvc_adapter.lock_hashes(root) != locked
    shutil.rmtree(root / "outputs/train_fusion/model")

    proc = subprocess.run(champion["checkout"], shell=True, cwd=root, capture_output=True)
    assert proc.returncode == 0, proc.stderr

    assert dvc_adapter.lock_hashes(root) == locked
    assert predictions.read_bytes() == original
    assert (root / "outputs/train_fusion/model/weights.safetensors").is_file()
    assert "up to date" in dvc(root, "status")  # every out matches the champion's dvc.lock
