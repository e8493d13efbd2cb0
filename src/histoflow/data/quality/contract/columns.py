"""The table the contract's expectations run on: required columns and derived helper columns.

GX expectations judge one row at a time, so every rule across rows reads a column derived
here first: ``_outside_root`` (the path, and with the data folder known, its resolved link
target), ``_patient_n_splits``, ``_class_count``, ``_class_ratio``, ``_sha_n_splits``,
``_sha_n_labels``, ``_n_unlisted`` and ``_near_duplicate_across_splits`` (from the banded
perceptual-hash search of :mod:`histoflow.data.quality.hashing`).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histoflow.config import ValidateConfig
from histoflow.data.quality.hashing import near_duplicate_pairs

__all__ = ["REQUIRED_COLUMNS", "derive_columns", "require_columns"]

REQUIRED_COLUMNS: tuple[str, ...] = ("path", "label", "split", "patient_id", "readable")

# Columns a check reads besides REQUIRED_COLUMNS; needed only while the check is on.
_CHECK_COLUMNS: dict[str, tuple[str, ...]] = {
    "unreadable": ("bytes",),
    "duplicate_across_splits": ("sha256",),
    "mode": ("mode",),
    "size": ("width", "height"),
    "near_duplicate_across_splits": ("phash", "sha256"),
    "blurred": ("blur",),
    "blank": ("tissue_fraction",),
    "conflicting_labels": ("sha256",),
}
# What the rules' messages read besides those: an unreadable file's error, an inferred case.
_MESSAGE_COLUMNS = ("error", "case_id")


def require_columns(table: pd.DataFrame, levels: dict[str, str]) -> None:
    """Raise when ``table`` lacks a required column or one that an enabled check reads.

    Args:
        table: The per-image table.
        levels: Level of each enabled check, by name.

    Raises:
        ValueError: naming each missing column and the checks that need it.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    for check in levels:
        missing += [c for c in _CHECK_COLUMNS.get(check, ()) if c not in table.columns]
    if missing:
        needs = {c: [k for k in levels if c in _CHECK_COLUMNS.get(k, ())] for c in missing}
        named = ", ".join(f"{c!r} (for {', '.join(k) or 'every check'})" for c, k in needs.items())
        raise ValueError(
            f"data contract: table is missing column(s) {named}; measure them with "
            "histoflow.data.quality.features or set those checks to 'off' in validate.checks"
        )


def derive_columns(
    table: pd.DataFrame,
    cfg: ValidateConfig,
    classes: Sequence[str],
    levels: dict[str, str],
    *,
    root: Path | None = None,
    n_unlisted: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The table the expectations run on, and the near-duplicate pairs across splits.

    Args:
        table: The per-image table.
        cfg: Thresholds (the near-duplicate distance).
        classes: Allowed labels; only they count towards class sizes.
        levels: Level of each enabled check; the near-duplicate search runs only when its
            check is enabled.
        root: The data folder the paths are relative to; when given, a path whose resolved
            target (through symbolic links) lies outside it is outside the root too.
        n_unlisted: Images in the data folder that its manifest does not list.

    Returns:
        ``(frame, near)``: a copy of the columns of ``table`` that the rules read, with a
        fresh RangeIndex, missing values filled so that they fail their rules, and the derived
        ``_``-columns; and the pairs of
        :func:`~histoflow.data.quality.hashing.near_duplicate_pairs` (``i``, ``j``,
        ``distance``), empty when the check is off.
    """
    # Copy-on-write: ``frame`` shares the columns it does not change with ``table`` (the copy
    # of them was ~0.2 KB per tile), and ``table`` stays as it was.
    with pd.option_context("mode.copy_on_write", True):
        return _derive(table, cfg, classes, levels, root=root, n_unlisted=n_unlisted)


def _derive(
    table: pd.DataFrame,
    cfg: ValidateConfig,
    classes: Sequence[str],
    levels: dict[str, str],
    *,
    root: Path | None,
    n_unlisted: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    # First, while only the table is held: the search's arrays are ~0.25 KB per tile.
    near = pd.DataFrame({"i": [], "j": [], "distance": []}, dtype=int)
    if "near_duplicate_across_splits" in levels:
        near = near_duplicate_pairs(
            table["phash"].tolist(),
            cfg.near_duplicate_distance,
            groups=table["split"].fillna("<missing>").tolist(),
            distinct=table["sha256"].tolist(),
        )
    # A fresh RangeIndex makes GX's unexpected_index_list row positions into ``frame``. Only
    # the columns a rule or its message reads: a copy of every QC column was ~0.3 KB per tile.
    read = {
        *REQUIRED_COLUMNS,
        *_MESSAGE_COLUMNS,
        *(c for k in levels for c in _CHECK_COLUMNS.get(k, ())),
    }
    frame = table[[c for c in table.columns if c in read]].reset_index(drop=True)
    # GX map expectations skip nulls: a missing label, split or size must fail, not pass.
    frame["readable"] = frame["readable"].astype("boolean").fillna(False).astype(bool)
    for column in ("label", "split", "mode"):
        if column in frame:
            frame[column] = frame[column].fillna("<missing>")
    for column in ("width", "height", "bytes"):
        if column in frame:
            missing = -1 if column != "bytes" else 0
            frame[column] = pd.to_numeric(frame[column], errors="coerce").fillna(missing)
    for column in ("blur", "tissue_fraction"):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")

    inside = _links_inside(Path(root)) if root is not None else lambda _: True
    frame["_outside_root"] = [_leaves_root(p) or not inside(p) for p in frame["path"]]
    frame["_n_unlisted"] = n_unlisted  # one value for the table: GX reports it as observed
    frame["_patient_n_splits"] = (
        frame.groupby("patient_id")["split"].transform("nunique").fillna(1).astype(int)
    )
    # Cases validate inferred when the data names no patients (histoflow.data.quality.cases).
    frame["_case_n_splits"] = (
        frame.groupby("case_id")["split"].transform("nunique").fillna(1).astype(int)
        if "case_id" in frame
        else 1
    )
    # Only known classes are counted; an unknown label is the label rule's business.
    counts = frame.loc[frame["label"].isin(list(classes)), "label"].value_counts()
    frame["_class_count"] = frame["label"].map(counts)
    # One value for the whole table, so GX reports the ratio as the observed value.
    frame["_class_ratio"] = counts.max() / counts.min() if len(counts) > 1 else 1.0
    if "sha256" in frame:
        # Unreadable files fail their own check, and every empty file shares one sha256.
        same = frame["readable"] & frame["sha256"].fillna("").astype(str).ne("")
        by_sha = frame.loc[same, ["sha256", "split", "label"]].groupby("sha256")
        frame["_sha_n_splits"] = by_sha["split"].transform("nunique").reindex(frame.index)
        frame["_sha_n_labels"] = by_sha["label"].transform("nunique").reindex(frame.index)
        for column in ("_sha_n_splits", "_sha_n_labels"):
            frame[column] = frame[column].fillna(1).astype(int)

    flag = np.zeros(len(frame), dtype=bool)
    flag[near["i"].to_numpy()] = flag[near["j"].to_numpy()] = True
    frame["_near_duplicate_across_splits"] = flag
    return frame, near


def _links_inside(root: Path):
    """A test of whether a path under ``root`` resolves (through links) to a file inside it."""
    real_root = root.resolve()

    def inside(path: Any) -> bool:
        if not isinstance(path, str) or not path:
            return True  # a missing path is the schema rule's business
        try:
            return (root / path).resolve().is_relative_to(real_root)
        except (OSError, RuntimeError):  # a link loop: the file is unreadable, reported there
            return True

    return inside


def _leaves_root(path: Any) -> bool:
    if not isinstance(path, str) or not path:
        return False  # a missing path is the schema rule's business
    path = path.replace("\\", "/")
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        return True
    norm = posixpath.normpath(path)
    return norm == ".." or norm.startswith("../")
