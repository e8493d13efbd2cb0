"""Deployments: flows/deployments.py (serve, one machine) and prefect.yaml (work pool) agree."""

from __future__ import annotations

import ast
from datetime import timedelta

import pytest
import yaml

SCHEDULES = {"nightly": {"cron": "0 2 * * *"}, "inbox": {"interval": 900}}
FLOWS = {"nightly": "histoflow-training", "inbox": "histoflow-monitor-inbox"}


@pytest.fixture(scope="module")
def prefect_yaml(repo) -> dict:
    return yaml.safe_load((repo / "prefect.yaml").read_text())


def test_build_deployments_schedules_both_flows_on_the_project(
    tmp_path, prefect_yaml, repo, flow_module
):
    (tmp_path / "params.yaml").write_text((repo / "params.yaml").read_text())
    nightly, inbox = flow_module("deployments").build_deployments(tmp_path)

    assert (nightly.flow_name, nightly.name) == (FLOWS["nightly"], "nightly")
    assert (inbox.flow_name, inbox.name) == (FLOWS["inbox"], "inbox")
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    assert [s.schedule.interval for s in inbox.schedules] == [timedelta(minutes=15)]
    assert nightly.concurrency_limit == 1
    assert nightly.parameters == {"root": str(tmp_path.resolve())}
    assert inbox.parameters == {"root": str(tmp_path.resolve()), "params_file": "params.yaml"}
    # Served and work-pool deployments run the same code.
    entrypoints = {d["name"]: d["entrypoint"] for d in prefect_yaml["deployments"]}
    assert nightly.entrypoint.endswith(entrypoints["nightly"])
    assert inbox.entrypoint.endswith(entrypoints["inbox"])


def test_schedules_come_from_params(tmp_path, repo, flow_module):
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["deploy"].update(
        training_cron="15 4 * * 1-5", timezone="Europe/Paris", inbox_interval_minutes=2
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    nightly, inbox = flow_module("deployments").build_deployments(tmp_path)
    assert (nightly.schedules[0].schedule.cron, nightly.schedules[0].schedule.timezone) == (
        "15 4 * * 1-5",
        "Europe/Paris",
    )
    assert inbox.schedules[0].schedule.interval == timedelta(minutes=2)


@pytest.mark.parametrize("name", ["nightly", "inbox"])
def test_prefect_yaml_entrypoint_is_a_flow_in_the_repository(name, prefect_yaml, repo):
    (deployment,) = [d for d in prefect_yaml["deployments"] if d["name"] == name]
    path, function = deployment["entrypoint"].split(":")
    assert (repo / path).is_file(), f"prefect.yaml {name}: {path} does not exist"
    # Read, not imported: prefect deploy imports it; this only checks the names line up.
    flows = {
        node.name: decorator
        for node in ast.parse((repo / path).read_text()).body
        if isinstance(node, ast.FunctionDef)
        for decorator in node.decorator_list
        if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "flow"
    }
    assert function in flows, f"prefect.yaml {name}: {path} has no @flow {function}"
    flow_name = {k.arg: k.value.value for k in flows[function].keywords}.get("name")
    assert flow_name == FLOWS[name]


def test_prefect_yaml_schedules_pool_and_pull_step(prefect_yaml, repo):
    # Prefect's own model of prefect.yaml (private, but it is what `prefect deploy` reads).
    from prefect.cli.deploy._models import PrefectYamlModel

    from histoflow.config import load_params

    model = PrefectYamlModel.model_validate(prefect_yaml)
    assert {d.name for d in model.deployments} == set(SCHEDULES)
    deploy = load_params(repo / "params.yaml").deploy
    expected = {
        "nightly": [{"cron": deploy.training_cron, "timezone": deploy.timezone}],
        "inbox": [{"interval": deploy.inbox_interval_minutes * 60}],
    }
    for deployment in prefect_yaml["deployments"]:
        # prefect.yaml is static: it must mirror params.yaml's deploy section.
        assert deployment["schedules"] == expected[deployment["name"]]
        assert deployment["work_pool"]["name"] == "histoflow"
        assert deployment["parameters"] == {"root": "."}
    nightly = next(d for d in prefect_yaml["deployments"] if d["name"] == "nightly")
    assert nightly["concurrency_limit"]["limit"] == deploy.training_concurrency
    (step,) = prefect_yaml["pull"]
    assert "prefect.deployments.steps.set_working_directory" in step
