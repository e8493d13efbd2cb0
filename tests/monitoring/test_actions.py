"""Actions on drift: nothing, a notification through a real Prefect block, a retrain run."""

from __future__ import annotations

import json

from prefect import flow
from prefect.blocks.abstract import NotificationBlock
from prefect.client.orchestration import get_client

from histoflow.config import MonitorConfig
from histoflow.monitoring.actions import take_action

DRIFTED = {
    "batch": "lab_b",
    "drift_detected": True,
    "report": "monitoring/reports/lab_b/drift.html",
    "signals": {
        "features": {"drifted": True, "share": 0.5},
        "embeddings": {"drifted": True, "share": 0.75},
        "predictions": {"drifted": False, "share": 0.0},
    },
}


class FileNotifier(NotificationBlock):
    """A real notification block that appends messages to a file instead of the network."""

    _block_type_slug = "histoflow-test-file-notifier"

    path: str

    def notify(self, body: str, subject: str | None = None) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"subject": subject, "body": body}) + "\n")


@flow(name="histoflow-training")
def stand_in_training(root: str = ".") -> None:
    """Named like the real training flow; the test only starts (never runs) it."""


def test_no_drift_takes_no_action():
    for action in ("notify", "retrain"):
        record = take_action({**DRIFTED, "drift_detected": False}, MonitorConfig(action=action))
        assert record["action"] == action
        assert record["taken"] is False
        assert "no drift" in record["detail"]


def test_action_none_only_reports():
    record = take_action(DRIFTED, MonitorConfig(action="none"))
    assert record == {"action": "none", "taken": False, "detail": record["detail"]}


def test_notify_without_a_block_explains_how_to_configure_it():
    record = take_action(DRIFTED, MonitorConfig(action="notify"))
    assert record["taken"] is False
    assert "monitor.notify_block" in record["detail"]
    assert "prefect block create" in record["detail"]


def test_notify_with_an_unknown_block_does_not_fail(prefect_harness):
    cfg = MonitorConfig(action="notify", notify_block="slack-webhook/no-such-block")
    record = take_action(DRIFTED, cfg)
    assert record["taken"] is False
    assert "no-such-block" in record["detail"]
    assert "monitor.notify_block" in record["detail"]


def test_notify_sends_through_a_saved_block(tmp_path, prefect_harness):
    inbox = tmp_path / "messages.jsonl"
    FileNotifier(path=str(inbox)).save("histoflow-test-ops", overwrite=True)

    by_slug = MonitorConfig(
        action="notify", notify_block="histoflow-test-file-notifier/histoflow-test-ops"
    )
    record = take_action(DRIFTED, by_slug)
    assert record["taken"] is True, record
    message = json.loads(inbox.read_text().splitlines()[0])
    assert "lab_b" in message["subject"]
    assert "lab_b" in message["body"]
    assert "features, embeddings drifted" in message["body"]
    assert "predictions" not in message["body"]
    assert DRIFTED["report"] in message["body"]

    # A bare block name is found among the notification blocks on the server.
    by_name = MonitorConfig(action="notify", notify_block="histoflow-test-ops")
    assert take_action(DRIFTED, by_name)["taken"] is True
    assert len(inbox.read_text().splitlines()) == 2


def test_retrain_starts_a_run_of_the_training_deployment(prefect_harness):
    deployment_id = stand_in_training.to_deployment(name="drift-test").apply()
    cfg = MonitorConfig(action="retrain", retrain_deployment="histoflow-training/drift-test")
    record = take_action(DRIFTED, cfg)
    assert record["taken"] is True, record
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(record["flow_run_id"])
    assert run.deployment_id == deployment_id
    assert "drift-retrain" in run.tags
    assert run.name in record["detail"]
    # The same batch retried (e.g. after a later step failed) does not start a second run.
    assert take_action(DRIFTED, cfg)["flow_run_id"] == record["flow_run_id"]


def test_retrain_without_the_deployment_says_how_to_create_it(prefect_harness):
    cfg = MonitorConfig(action="retrain", retrain_deployment="histoflow-training/not-deployed")
    record = take_action(DRIFTED, cfg)
    assert record["taken"] is False
    assert "not-deployed" in record["detail"]
    assert "python flows/deployments.py" in record["detail"]
    assert "flow_run_id" not in record
