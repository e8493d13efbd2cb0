"""The monitoring inbox: which batch folders still need a drift report, and which failed.

A batch is a subfolder of the inbox; it is done once ``reports/<batch>/drift.json`` exists.
A failed attempt leaves ``reports/<batch>/error.json`` instead, and the batch stays pending
so that the next sweep retries it.
"""

from __future__ import annotations

import json
import traceback
from datetime import UTC, datetime
from pathlib import Path

from histoflow.io import write_json

__all__ = ["clear_failure", "pending_batches", "record_failure"]

DRIFT_FILE = "drift.json"
ERROR_FILE = "error.json"


def pending_batches(inbox: Path, reports: Path) -> list[Path]:
    """Batch folders in ``inbox`` that have no drift report yet, sorted by name.

    Hidden entries are skipped, so a batch can be copied in as ``.name`` and renamed once
    complete; a sweep then never sees it half-copied. Plain files are skipped too. A batch
    whose last attempt failed (``error.json`` but no ``drift.json``) is pending again.

    Args:
        inbox: Folder holding one subfolder per batch; a missing inbox has no batches.
        reports: Folder holding one report subfolder per batch.

    Returns:
        The pending batch folders.
    """
    if not inbox.is_dir():
        return []
    return sorted(
        folder
        for folder in inbox.iterdir()
        if folder.is_dir()
        and not folder.name.startswith(".")
        and not (reports / folder.name / DRIFT_FILE).is_file()
    )


def record_failure(reports: Path, batch: str, error: BaseException) -> Path:
    """Write ``reports/<batch>/error.json`` for a failed attempt, counting attempts.

    Args:
        reports: Folder holding one report subfolder per batch.
        batch: Name of the batch folder.
        error: The exception that ended the attempt.

    Returns:
        The path of the written ``error.json``.
    """
    path = reports / batch / ERROR_FILE
    write_json(
        path,
        {
            "batch": batch,
            "error_type": type(error).__name__,
            "message": str(error),
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "attempts": _previous_attempts(path) + 1,
            "traceback": "".join(traceback.format_exception(error)),
        },
    )
    return path


def clear_failure(reports: Path, batch: str) -> None:
    """Remove ``reports/<batch>/error.json`` after a successful attempt (if there is one)."""
    (reports / batch / ERROR_FILE).unlink(missing_ok=True)


def _previous_attempts(path: Path) -> int:
    # An unreadable record (e.g. edited by hand) restarts the count rather than failing the
    # sweep over bookkeeping.
    try:
        return int(json.loads(path.read_text())["attempts"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
