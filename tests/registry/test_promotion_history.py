"""Promotion records are appended, never overwritten; the lock's stale break is race-safe.

A local SQLite store (the project default) with cheap versions: promotion reads only metrics.
"""

from __future__ import annotations

import json
import os

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from histoflow.config import parse_params
from histoflow.registry import promote, promote_by_hand, rollback, tracking_uri
from histoflow.registry import promotion as promotion_module
from histoflow.registry.tracking import use_tracking_uri


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """One SQLite store for the module (creating one takes seconds); each test its own model."""
    root = tmp_path_factory.mktemp("promotion")
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    use_tracking_uri(tracking_uri(root))
    mlflow.set_experiment("histoflow")
    yield root
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture()
def store(project, request, tiny_params_dict):
    use_tracking_uri(tracking_uri(project))
    name = request.node.name[:60]
    MlflowClient().create_registered_model(name)
    registry = parse_params(tiny_params_dict(registry={"model_name": name})).registry
    return project, MlflowClient(), registry


def _version(client: MlflowClient, cfg, macro_recall: float) -> str:
    with mlflow.start_run() as run:
        mlflow.log_metrics({"macro_recall": macro_recall, "recall.a": macro_recall})
    return str(client.create_model_version(cfg.model_name, "runs:/x/none", run.info.run_id).version)


def _decisions(client: MlflowClient, cfg, version: str) -> list[str]:
    tags = client.get_model_version(cfg.model_name, version).tags
    return [d["decision"] for d in json.loads(tags["promotion.history"])]


def test_promoting_the_champion_by_rule_keeps_its_record(store):
    root, client, cfg = store
    v1 = _version(client, cfg, 0.8)
    assert promote(cfg, v1, root).promoted
    record = client.get_model_version(cfg.model_name, v1).tags

    again = promote(cfg, v1, root)  # `histoflow registry promote 1 --by-rule`

    assert again.promoted and "already the champion" in again.reason
    assert client.get_model_version(cfg.model_name, v1).tags == record  # nothing overwritten
    assert record["promotion.decision"] == "promoted"


def test_every_decision_is_appended_to_the_version_history(store):
    root, client, cfg = store
    v1, v2 = _version(client, cfg, 0.8), _version(client, cfg, 0.7)
    promote(cfg, v1, root)
    assert not promote(cfg, v2, root).promoted
    promote_by_hand(cfg, v2, root, note="reviewed")
    rollback(cfg, root, note="worse on site B")

    assert _decisions(client, cfg, v2) == [
        "kept champion",
        "promoted by hand",
        "demoted by rollback to v1",
    ]
    assert _decisions(client, cfg, v1) == ["promoted", "restored by rollback"]
    history = json.loads(client.get_model_version(cfg.model_name, v2).tags["promotion.history"])
    assert "does not beat" in history[0]["reason"] and "reviewed" in history[1]["reason"]


def test_a_stale_lock_judged_earlier_is_not_broken_once_a_fresh_one_holds(store, monkeypatch):
    _, client, cfg = store
    lock = f"{cfg.model_name}.promotion-lock"
    client.create_registered_model(lock, tags={"token": "old"})
    seen = client.get_registered_model(lock)  # a waiter reads the lock ...
    # ... and judges it stale (as if 10 minutes had passed) while another waiter breaks it
    # and takes the lock itself.
    monkeypatch.setattr(promotion_module, "_STALE_LOCK_S", -1)
    client.delete_registered_model(lock)
    client.create_registered_model(lock, tags={"token": "fresh"})

    promotion_module._break_if_stale(client, lock, seen)

    assert client.get_registered_model(lock).tags["token"] == "fresh"
    assert client.search_registered_models(f"name = '{lock}.break'") == []
    # The stale lock itself is still broken, once.
    promotion_module._break_if_stale(client, lock, client.get_registered_model(lock))
    assert client.search_registered_models(f"name = '{lock}'") == []
