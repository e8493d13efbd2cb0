"""Pointing MLflow at a project's store must not leak that store to later projects."""

from __future__ import annotations

import mlflow

from histoflow.registry.tracking import tracking_uri, use_tracking_uri


def test_a_projects_store_does_not_become_the_next_projects(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first, second = tmp_path / "a", tmp_path / "b"
    use_tracking_uri(tracking_uri(first))
    assert mlflow.get_tracking_uri() == tracking_uri(first)
    assert tracking_uri(second).startswith(f"sqlite:///{second.resolve()}")  # not a's store


def test_a_uri_the_user_set_stays_in_the_environment(tmp_path, monkeypatch):
    user = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", user)
    use_tracking_uri(tracking_uri(tmp_path / "project"))
    assert mlflow.get_tracking_uri() == user
    assert tracking_uri(tmp_path / "other") == user
