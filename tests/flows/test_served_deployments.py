"""`histoflow server` + `histoflow serve`: a real Prefect server on loopback, the deployments
with their schedules from params.yaml, and one run triggered through the API that completes."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
import yaml

from servers import Server, free_port

pytestmark = pytest.mark.slow


def test_served_deployments_run_an_inbox_batch(trained_project, tiny_data, tmp_path, bin_dir):
    root = tmp_path / "project"
    shutil.copytree(trained_project, root, symlinks=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["deploy"].update(training_cron="30 3 * * *", inbox_interval_minutes=5)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    batch = root / "monitoring/inbox/batch1"
    for label in ("adipose", "stroma"):
        (batch / label).mkdir(parents=True)
        for f in sorted((tiny_data / label).glob("*.png"))[:4]:
            shutil.copy(f, batch / label / f.name)

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api}
    server = Server(
        [f"{bin_dir}/histoflow", "server", "--port", str(port)],
        log=tmp_path / "server.log",
        cwd=root,
        env=env,
    )
    serve = None
    try:
        server.wait_http(f"{api}/health", timeout=150)
        serve = Server(
            [f"{bin_dir}/histoflow", "serve"], log=tmp_path / "serve.log", cwd=root, env=env
        )
        with httpx.Client(base_url=api, timeout=30) as http:
            deployments = _wait_for_deployments(http, serve)
            nightly, inbox = deployments["nightly"], deployments["inbox"]
            assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["30 3 * * *"]
            assert [s["schedule"]["interval"] for s in inbox["schedules"]] == [300.0]
            assert nightly["global_concurrency_limit"]["limit"] == 1
            assert inbox["parameters"]["root"] == str(root.resolve())

            from prefect.deployments import run_deployment
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings(updates={PREFECT_API_URL: api}):
                run = run_deployment("histoflow-monitor-inbox/inbox", timeout=240)
            assert run.state.is_completed(), f"{run.state}\n{serve.tail()}"
    finally:
        if serve is not None:
            serve.stop()
        server.stop()
    summary = json.loads((root / "monitoring/reports/batch1/drift.json").read_text())
    assert summary["batch"] == "batch1" and summary["n_current"] == 8


def _wait_for_deployments(http: httpx.Client, serve: Server, timeout: float = 120) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serve.proc.poll() is not None:
            raise RuntimeError(f"histoflow serve exited:\n{serve.tail()}")
        found = http.post("/deployments/filter", json={"limit": 10}).json()
        if len(found) == 2:
            return {d["name"]: d for d in found}
        time.sleep(0.5)
    raise TimeoutError(f"deployments not created in {timeout} s:\n{serve.tail()}")
