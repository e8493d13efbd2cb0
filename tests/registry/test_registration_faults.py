"""A registration that fails half-way leaves no version behind, and its retry registers one."""

from __future__ import annotations

import json
import shutil

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from histoflow.config import parse_params
from histoflow.registry import log_and_register
from histoflow.stages import evaluate, train_encoder, train_fusion

pytestmark = pytest.mark.slow


def test_failure_after_the_version_exists_deletes_it_and_the_retry_succeeds(
    reproduced_project, tmp_path, monkeypatch, tiny_params_dict
):
    root = tmp_path / "project"
    encoder, fusion = train_encoder.Outputs().model, train_fusion.Outputs().model
    metrics_file = evaluate.Outputs().metrics
    for part in (encoder, fusion, metrics_file.parent):
        shutil.copytree(reproduced_project / part, root / part)
    example = next((reproduced_project / "data").rglob("*.png"))
    evaluation = json.loads((root / metrics_file).read_text())
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    # The tracking server "drops" the first alias update, after the version was created.
    real = MlflowClient.set_registered_model_alias
    calls = []

    def flaky(self, name, alias, version):
        calls.append(version)
        if len(calls) == 1:
            raise ConnectionError("Connection reset by peer")
        return real(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", flaky)
    params = parse_params(tiny_params_dict(registry={"retries": 1, "retry_backoff_s": 0.01}))
    version = log_and_register(
        root,
        params,
        metrics={"macro_recall": evaluation["macro_recall"]},
        model_files={"encoder": root / encoder, "fusion": root / fusion},
        classes=sorted(evaluation["per_class_recall"]),
        example_image=example,
        artifacts=[],
        tags={},
    )
    client = MlflowClient()
    versions = client.search_model_versions("name = 'histoflow'")
    assert [str(v.version) for v in versions] == [version]  # the first attempt's version is gone
    assert versions[0].tags["registration"] == "complete"
    assert str(client.get_model_version_by_alias("histoflow", "challenger").version) == version
    runs = mlflow.search_runs(experiment_names=["histoflow"], output_format="list")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
