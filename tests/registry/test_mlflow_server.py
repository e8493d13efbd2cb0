"""Registration, promotion, serving and faults against a real `mlflow server` on 127.0.0.1.

One server (SQLite backend, free port) for the module; tests run in file order and the last one
stops it. Promotion tests register cheap extra versions (a run with metrics) next to the one
real model, since promotion reads only run metrics.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from histoflow.config import parse_params
from histoflow.registry import (
    RegistryUnavailable,
    evaluation_metrics,
    log_and_register,
    promote,
    promote_by_hand,
    rollback,
    status,
)
from histoflow.registry.tracking import use_tracking_uri
from histoflow.stages import evaluate, train_encoder, train_fusion
from servers import Server, free_port

pytestmark = pytest.mark.slow
NAME = "histoflow"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, bin_dir):
    work = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    server = Server(
        [
            f"{bin_dir}/mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{work / 'mlflow.db'}",
            "--artifacts-destination",
            str(work / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        log=work / "server.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_http(f"{url}/health", timeout=120)
        yield {"url": url, "db": work / "mlflow.db", "server": server}
    finally:
        server.stop()


@pytest.fixture()
def over_http(mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server["url"])
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(mlflow_server["url"])
    return MlflowClient()


def _params(tiny_params_dict, **registry):
    return parse_params(tiny_params_dict(registry={"retry_backoff_s": 0.1, **registry}))


def _register(root: Path, params) -> str:
    evaluation = json.loads((root / evaluate.Outputs().metrics).read_text())
    metrics = evaluation_metrics(evaluation)
    metrics.update({"macro_recall.ci_low": 0.2, "macro_recall.ci_high": 0.9})
    example = next((root / "data").rglob("*.png"))
    return log_and_register(
        root,
        params,
        metrics=metrics,
        model_files={
            "encoder": root / train_encoder.Outputs().model,
            "fusion": root / train_fusion.Outputs().model,
        },
        classes=sorted(evaluation["per_class_recall"]),
        example_image=example,
        artifacts=[root / "params.yaml", root / "metrics"],
        tags={"git_commit": "abc123"},
        model_card="# Model card: histoflow\n",
    )


def _cheap_version(client: MlflowClient, macro_recall: float, recalls: dict[str, float]) -> str:
    """A registered version whose run has only metrics (enough for the promotion rules)."""
    with mlflow.start_run() as run:
        mlflow.log_metrics(
            {"macro_recall": macro_recall, **{f"recall.{c}": r for c, r in recalls.items()}}
        )
    mv = client.create_model_version(NAME, f"runs:/{run.info.run_id}/none", run.info.run_id)
    return str(mv.version)


def test_register_over_http_then_promote_and_load_in_a_fresh_process(
    over_http, reproduced_project, tmp_path, tiny_params_dict
):
    client = over_http
    version = _register(reproduced_project, _params(tiny_params_dict))
    assert version == "1"
    mv = client.get_model_version(NAME, version)
    assert mv.tags["registration"] == "complete"
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == version
    run = client.get_run(mv.run_id)
    assert run.data.metrics["macro_recall.ci_low"] == 0.2
    assert run.data.params["train_fusion.width"] == "32"
    tags = run.data.tags
    assert tags["git_commit"] == "abc123" and tags["package.torch"] and tags["machine.cpus"]
    artifacts = {a.path for a in client.list_artifacts(mv.run_id)}
    assert {"params.yaml", "metrics", "model_card.md", "environment"} <= artifacts

    decision = promote(_params(tiny_params_dict).registry, version, reproduced_project)
    assert decision.promoted and decision.reason == "no champion yet"
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert client.get_model_version(NAME, "1").tags["promotion.decision"] == "promoted"

    # A fresh process with nothing of the run (other cwd, no histoflow import by the caller).
    image = next((reproduced_project / "data").rglob("*.png"))
    script = (
        "import base64, sys, mlflow, pandas as pd\n"
        "m = mlflow.pyfunc.load_model('models:/histoflow@champion')\n"
        "img = base64.b64encode(open(sys.argv[1], 'rb').read()).decode()\n"
        "print(m.predict(pd.DataFrame({'image': [img]})).to_json(orient='records'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(image)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(row) >= {"label", "confidence", "uncertainty", "caption"}
    model_info = mlflow.models.get_model_info("models:/histoflow@champion")
    output_names = [c.name for c in model_info.signature.outputs.inputs]
    assert output_names[:3] == ["label", "confidence", "uncertainty"]
    assert set(output_names) == set(row)


def test_mlflow_models_serve_answers_like_histoflow_predict(
    over_http, reproduced_project, tmp_path, monkeypatch, bin_dir
):
    from histoflow.cli import main

    images = sorted((reproduced_project / "data").rglob("*.png"))[:4]
    port = free_port()
    server = Server(
        [
            f"{bin_dir}/mlflow",
            "models",
            "serve",
            "-m",
            "models:/histoflow@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        log=tmp_path / "serve.log",
        cwd=tmp_path,
    )
    try:
        server.wait_http(f"http://127.0.0.1:{port}/ping", timeout=180)
        body = {
            "dataframe_split": {
                "columns": ["image"],
                "data": [[base64.b64encode(p.read_bytes()).decode()] for p in images],
            }
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        served = pd.DataFrame(
            json.loads(urllib.request.urlopen(request, timeout=120).read())["predictions"]
        )
    finally:
        server.stop()

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "preds.json"
    assert main(["predict", *map(str, images), "--out", str(out), "--batch-size", "3"]) == 0
    local = pd.DataFrame(json.loads(out.read_text()))
    local = local.set_index("path").loc[[str(p) for p in images]].reset_index(drop=True)
    assert list(served["label"]) == list(local["label"])
    probs = [c for c in local if c.startswith("prob_")]
    assert (served[probs] - local[probs]).abs().max().max() < 1e-4
    assert list(served["caption"]) == list(local["caption"])


def test_two_concurrent_promotions_cannot_both_win(over_http, reproduced_project, tiny_params_dict):
    client = over_http
    recalls = {"a": 0.99, "b": 0.99}
    cfg = _params(tiny_params_dict).registry
    # A known, beatable champion: the tiny pipeline's own may score 1.0, which nothing beats.
    low = _cheap_version(client, 0.5, {"a": 0.5, "b": 0.5})
    promote_by_hand(cfg, low, reproduced_project, note="baseline for the race")
    versions = [_cheap_version(client, 0.99, recalls) for _ in range(2)]
    barrier, decisions = threading.Barrier(2), {}

    def race(version):
        barrier.wait()
        decisions[version] = promote(cfg, version, reproduced_project)

    threads = [threading.Thread(target=race, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    won = [v for v, d in decisions.items() if d.promoted]
    assert len(decisions) == 2 and len(won) == 1, {v: d.reason for v, d in decisions.items()}
    (winner,), (loser,) = won, [v for v in versions if v not in won]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == winner
    # The loser was judged against the winner, not the champion both saw before the race.
    assert decisions[loser].champion_version == winner
    assert "does not beat" in client.get_model_version(NAME, loser).tags["promotion.reason"]
    assert client.search_registered_models(f"name = '{NAME}.promotion-lock'") == []


def test_rules_rollback_and_promotion_by_hand_are_recorded(
    over_http, reproduced_project, tiny_params_dict
):
    client = over_http
    cfg = _params(tiny_params_dict, min_class_recall=0.5).registry
    before = status(cfg, reproduced_project)["champion"]["version"]
    weak = _cheap_version(client, 1.0, {"a": 1.0, "b": 0.4})  # best overall, one class poor
    decision = promote(cfg, weak, reproduced_project)
    assert not decision.promoted and "class recall below the floor 0.5: b 0.4000" in decision.reason
    assert client.get_model_version(NAME, weak).tags["promotion.check.floor"].startswith("fail")

    forced = promote_by_hand(cfg, weak, reproduced_project, note="pathologist review")
    assert forced.promoted and "pathologist review" in forced.reason
    tags = client.get_model_version(NAME, weak).tags
    assert (
        tags["promotion.decision"] == "promoted by hand"
        and "rules said" in tags["promotion.reason"]
    )
    assert status(cfg, reproduced_project)["champion"]["version"] == weak

    demoted, restored = rollback(cfg, reproduced_project, note="bad on site B")
    assert (demoted, restored) == (weak, before)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == before
    assert "bad on site B" in client.get_model_version(NAME, weak).tags["rollback.demoted"]
    assert status(cfg, reproduced_project)["history"][-1] == before


def test_registration_with_the_server_down_fails_clearly_and_registers_nothing(
    over_http, mlflow_server, reproduced_project, tiny_params_dict
):
    client = over_http
    count = len(client.search_model_versions(f"name = '{NAME}'"))
    mlflow_server["server"].stop()
    with pytest.raises(RegistryUnavailable) as err:
        _register(reproduced_project, _params(tiny_params_dict, retries=2))
    message = str(err.value)
    assert (
        mlflow_server["url"] in message
        and "3 attempts" in message
        and "No usable version was registered" in message
    )
    # Read the server's own database: no new version, half-registered or otherwise.
    use_tracking_uri(f"sqlite:///{mlflow_server['db']}")
    versions = MlflowClient().search_model_versions(f"name = '{NAME}'")
    assert len(versions) == count
    assert all(v.tags.get("registration", "complete") == "complete" for v in versions)
