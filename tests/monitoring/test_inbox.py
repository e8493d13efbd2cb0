"""The monitoring inbox: pending batches, failure records and retries."""

from __future__ import annotations

import json

from histoflow.monitoring.inbox import clear_failure, pending_batches, record_failure


def _inbox(tmp_path, *names):
    for name in names:
        (tmp_path / "inbox" / name).mkdir(parents=True)
    return tmp_path / "inbox", tmp_path / "reports"


def test_new_folders_are_pending_in_name_order(tmp_path):
    inbox, reports = _inbox(tmp_path, "b2", "a1")
    assert pending_batches(inbox, reports) == [inbox / "a1", inbox / "b2"]


def test_missing_inbox_has_nothing_pending(tmp_path):
    assert pending_batches(tmp_path / "inbox", tmp_path / "reports") == []


def test_batch_with_a_drift_report_is_done(tmp_path):
    inbox, reports = _inbox(tmp_path, "done", "new")
    (reports / "done").mkdir(parents=True)
    (reports / "done" / "drift.json").write_text("{}")
    assert pending_batches(inbox, reports) == [inbox / "new"]


def test_hidden_folders_and_files_are_ignored(tmp_path):
    inbox, reports = _inbox(tmp_path, ".copying", "ready")
    (inbox / "notes.txt").write_text("not a batch")
    (inbox / ".DS_Store").write_text("")
    assert pending_batches(inbox, reports) == [inbox / "ready"]


def test_failed_batch_is_pending_again_and_attempts_count_up(tmp_path):
    inbox, reports = _inbox(tmp_path, "flaky")
    path = record_failure(reports, "flaky", ValueError("no images found in flaky"))
    assert path == reports / "flaky" / "error.json"
    assert pending_batches(inbox, reports) == [inbox / "flaky"]
    first = json.loads(path.read_text())
    assert first["attempts"] == 1
    assert first["error_type"] == "ValueError"
    assert first["message"] == "no images found in flaky"
    assert first["time"].endswith("+00:00")

    record_failure(reports, "flaky", OSError("disk full"))
    second = json.loads(path.read_text())
    assert (second["attempts"], second["error_type"]) == (2, "OSError")


def test_clear_failure_removes_the_record(tmp_path):
    reports = tmp_path / "reports"
    record_failure(reports, "b", RuntimeError("x"))
    clear_failure(reports, "b")
    assert not (reports / "b" / "error.json").exists()
    clear_failure(reports, "never-failed")  # nothing to remove is fine
