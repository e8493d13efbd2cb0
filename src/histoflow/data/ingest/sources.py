"""Read a dataset into one table: an image folder or a CSV manifest, with splits.

Formats:
- image folder: ``<root>/<class>/*`` or ``<root>/<split>/<class>/*``;
- CSV manifest inside ``root``: ``path,label`` plus optional ``split,patient_id`` and any
  grouping columns, ``path`` relative to the CSV.

Splits come from the data when given; otherwise they are assigned stratified by label and
grouped by patient (no patient in two splits), with a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from histoflow.data.images import IMAGE_SUFFIXES
from histoflow.data.manifest import SPLITS

__all__ = ["SPLIT_ALIASES", "DataError", "assign_splits", "read_source"]

# Folder and column spellings of each split.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


class DataError(ValueError):
    """The dataset cannot be read; the message says which file or folder and what to do."""


def read_source(
    root: Path, manifest: str = "manifest.csv", label_column: str = "label"
) -> pd.DataFrame:
    """Read ``root`` as a manifest CSV (when ``root/manifest`` exists) or an image folder.

    ``label_column`` picks the manifest column that is the class (e.g. ``binary_label`` of the
    BreakHis import for benign vs malignant); the folder's own label is kept as ``source_label``.

    Returns:
        A table with ``path`` (relative to ``root``, POSIX), ``label``, ``split`` (may be
        empty), ``patient_id`` and any extra manifest columns, sorted by path.

    Raises:
        DataError: the folder is missing or holds no images, or the manifest is malformed.
    """
    root = Path(root)
    hint = "generate a demo dataset with `histoflow data synth --out data`, or set data.root in params.yaml to your images"
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist: {hint}")
    csv = root / manifest
    table = _read_manifest(csv) if csv.is_file() else _scan_folder(root)
    if table.empty:
        raise DataError(
            f"data folder {root} holds no images (looked for {root}/<class>/*.png|jpg|tif or {csv}): {hint}"
        )
    if "patient_id" not in table or table["patient_id"].isna().all():
        # Without patient ids every image is its own patient (the path, not the file name:
        # public datasets reuse names such as image(1).jpg across split folders).
        table["patient_id"] = table["path"]
    table["patient_id"] = table["patient_id"].fillna(table["path"]).astype(str)
    if "split" not in table:
        table["split"] = ""
    table["split"] = (
        table["split"].fillna("").astype(str).str.lower().map(lambda s: SPLIT_ALIASES.get(s, s))
    )
    if label_column != "label":
        if label_column not in table:
            raise DataError(
                f"data.label_column {label_column!r} is not a column of {csv}; "
                f"columns: {', '.join(table.columns)}"
            )
        table["source_label"] = table["label"]
        table["label"] = table[label_column]
    table["label"] = table["label"].astype(str)
    return table.sort_values("path", kind="stable").reset_index(drop=True)


def assign_splits(
    table: pd.DataFrame, *, val_fraction: float, test_fraction: float, seed: int
) -> pd.DataFrame:
    """Fill in ``split`` where the data did not give one.

    A complete split column is kept. A data set with only train/test (common for public image
    folders) gets ``val`` carved from train. Otherwise patients are assigned per label so each
    class is represented in every split and no patient spans two splits.
    """
    table = table.copy()
    given = set(table["split"]) - {""}
    unknown = given - set(SPLITS)
    if unknown:
        raise DataError(f"split column has values {sorted(unknown)}; expected train, val or test")
    if given and (table["split"] != "").all():
        if "val" in given or val_fraction == 0:
            return table
        train = table["split"] == "train"
        val = _pick_patients(table[train], val_fraction / (1 - test_fraction), seed)
        table.loc[train & table["patient_id"].isin(val), "split"] = "val"
        return table
    if given:
        raise DataError(
            "split column is filled for some rows but empty for others; fill it for all rows or none"
        )
    test = _pick_patients(table, test_fraction, seed)
    rest = ~table["patient_id"].isin(test)
    val = _pick_patients(table[rest], val_fraction / (1 - test_fraction), seed + 1)
    table["split"] = np.where(
        table["patient_id"].isin(test),
        "test",
        np.where(table["patient_id"].isin(val), "val", "train"),
    )
    return table


def _pick_patients(table: pd.DataFrame, fraction: float, seed: int) -> set[str]:
    """Choose patients holding about ``fraction`` of each label's images."""
    rng = np.random.default_rng(seed)
    # A patient with several labels is assigned through its most frequent one.
    major = table.groupby("patient_id")["label"].agg(lambda s: s.value_counts().index[0])
    sizes = table.groupby("patient_id").size()
    chosen: set[str] = set()
    for label in sorted(major.unique()):
        patients = np.array(sorted(major.index[major == label]))
        if len(patients) < 2:
            continue  # one patient cannot be split; it stays where it is
        rng.shuffle(patients)
        target = fraction * sizes[patients].sum()
        taken = 0
        for patient in patients[:-1]:  # always leave one patient for the remaining splits
            if taken >= target or (taken and taken + sizes[patient] / 2 > target):
                break
            chosen.add(patient)
            taken += sizes[patient]
    return chosen


def _read_manifest(csv: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv}: not a readable CSV: {exc}") from None
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise DataError(
            f"{csv}: missing column(s) {sorted(missing)}; a manifest needs path,label "
            "and optionally split,patient_id and grouping columns"
        )
    if table["path"].isna().any() or table["label"].isna().any():
        rows = (table.index[table["path"].isna() | table["label"].isna()] + 2).tolist()[:10]
        raise DataError(f"{csv}: empty path or label on line(s) {rows}")
    table["path"] = table["path"].map(lambda p: Path(p).as_posix())
    return table


def _scan_folder(root: Path) -> pd.DataFrame:
    rows = []
    for file in sorted(root.rglob("*")):
        if not file.is_file() or file.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        rel = file.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        parts = rel.parts
        if len(parts) >= 3 and parts[0].lower() in SPLIT_ALIASES:
            rows.append({"path": rel.as_posix(), "label": parts[1], "split": parts[0]})
        elif len(parts) >= 2:
            rows.append({"path": rel.as_posix(), "label": parts[0], "split": ""})
    return pd.DataFrame(rows, columns=["path", "label", "split"])
