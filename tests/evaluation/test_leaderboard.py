"""`histoflow probe` compares encoders on a real project's split and records every point."""

from __future__ import annotations

import shutil

import mlflow
import pandas as pd

from histoflow.cli import main
from histoflow.registry.tracking import use_tracking_uri
from histoflow.stages import train_encoder


def test_probe_writes_a_leaderboard_and_logs_each_point(reproduced_project, tmp_path, monkeypatch):
    root = tmp_path / "project"
    shutil.copytree(reproduced_project, root, symlinks=True)
    monkeypatch.chdir(root)
    trained = str(train_encoder.Outputs().model)
    status = main(["probe", "--encoder", "test_resnet", "--encoder", trained, "--seeds", "2"])
    assert status == 0
    table = pd.read_csv(root / "reports/probe/leaderboard.csv")
    probes = {"linear", "knn20", "fewshot_1", "fewshot_5", "fewshot_10"}
    assert set(table["encoder"]) == {"test_resnet", trained} and set(table["probe"]) == probes
    assert table["macro_recall"].between(0, 1).all() and (table["n_seeds"] == 2).all()
    assert (table["per_seed_macro_recall"].str.split().str.len() == 2).all()
    assert (root / "reports/probe/leaderboard.png").stat().st_size > 5_000
    use_tracking_uri(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["histoflow-encoders"])
    assert len(runs) == len(table) == 10
    assert set(runs["params.probe"]) == probes
