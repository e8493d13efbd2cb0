"""Read a dataset into one table: an image folder or a CSV manifest, with splits.

Formats:
- image folder: ``<root>/<class>/*`` or ``<root>/<split>/<class>/*``;
- CSV manifest inside ``root``: ``path,label`` plus optional ``split,patient_id`` and any
  grouping columns, ``path`` relative to the CSV.

Splits come from the data when given; the missing ones are carved from its training images
(or, without any split, assigned to every image), stratified by label and grouped by patient
(no patient in two splits), with a fixed seed. :func:`split_origin` records which is which.
With a manifest, :func:`unlisted_images` finds the images on disk that it does not list.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from histoflow.data.images import IMAGE_SUFFIXES
from histoflow.data.manifest import SPLITS, printable_path

__all__ = [
    "SPLIT_ALIASES",
    "DataError",
    "assign_splits",
    "read_source",
    "split_origin",
    "unlisted_images",
]

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
    """Fill in the splits the data did not give, carving them out of its training images.

    Every split of :data:`~histoflow.data.manifest.SPLITS` the data gives is kept as it is.
    Without any split (a class-folder layout, a CSV without a split column) every image is
    assigned. With a train split but no val or test (``train/<class>/`` folders only,
    train/test, train/val), the missing ones are carved from train. Either way patients are
    chosen per label, so each class is represented in every split, and no patient spans two
    splits: ``test_fraction`` and ``val_fraction`` of all images, seeded by ``seed``. A split
    that cannot be carved (no train split to carve from, a class with too few patients,
    ``val_fraction`` 0) stays empty or lacks classes; the data contract reports it, with the
    remedy, before anything trains.

    Raises:
        DataError: the split column has unknown values, or is filled for some rows only.
    """
    table = table.copy()
    given = set(table["split"]) - {""}
    unknown = given - set(SPLITS)
    if unknown:
        raise DataError(f"split column has values {sorted(unknown)}; expected train, val or test")
    if given and (table["split"] == "").any():
        raise DataError(
            "split column is filled for some rows but empty for others; fill it for all rows or none"
        )
    if not given:
        table["split"] = "train"
    elif "train" not in given:
        return table  # nothing to carve from
    train = table["split"] == "train"
    if "test" not in given:
        # test_fraction of all images, as a share of those train holds (all but a given val).
        share = 1.0 - (val_fraction if "val" in given else 0.0)
        test = _pick_patients(table[train], test_fraction / share, seed)
        table.loc[train & table["patient_id"].isin(test), "split"] = "test"
        train = table["split"] == "train"
    if "val" not in given and val_fraction > 0:
        # A given train/test pair carves val with the seed itself (as before test was carved).
        val_seed = seed if "test" in given else seed + 1
        val = _pick_patients(table[train], val_fraction / (1 - test_fraction), val_seed)
        table.loc[train & table["patient_id"].isin(val), "split"] = "val"
    return table


def split_origin(given: pd.Series, assigned: pd.Series) -> dict[str, str]:
    """Where each split came from: ``data`` (given), ``carved`` (by :func:`assign_splits`), ``none``.

    Args:
        given: The split column as read from the data (``""`` where it gave none).
        assigned: The same column after :func:`assign_splits`.
    """
    have, had = set(assigned), set(given)
    return {s: "data" if s in had else "carved" if s in have else "none" for s in SPLITS}


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


def unlisted_images(root: Path, listed: Iterable[str], manifest: str = "manifest.csv") -> list[str]:
    """Image files under ``root`` that ``root/manifest`` does not list; none without a manifest.

    Files are found as the folder layout finds them (image suffixes, hidden files and folders
    skipped). Names come back relative to ``root``, sorted, and printable
    (:func:`~histoflow.data.manifest.printable_path`).

    Args:
        root: The data folder.
        listed: The manifest's paths, relative to ``root``.
        manifest: The manifest's file name inside ``root``.
    """
    if not (Path(root) / manifest).is_file():
        return []  # a folder layout lists exactly what is on disk
    known = {posixpath.normpath(p) for p in listed}
    return [printable_path(rel) for rel in _image_files(Path(root)) if rel not in known]


def _image_files(root: Path) -> Iterator[str]:
    """POSIX paths relative to ``root`` of its image files, hidden files and folders skipped.

    In sorted order, folder by folder (the order of ``sorted(root.rglob("*"))``), as strings
    from ``os.scandir``: a ``Path`` per file held ~0.4 KB per tile after the scan.
    """
    yield from _walk(os.fspath(root), "")


def _walk(folder: str, prefix: str) -> Iterator[str]:
    try:
        with os.scandir(folder) as found:
            entries = sorted(found, key=lambda entry: entry.name)
    except PermissionError:  # as rglob: a folder that cannot be listed holds nothing
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):  # as rglob: links to folders not followed
            yield from _walk(entry.path, f"{prefix}{entry.name}/")
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and entry.is_file():
            yield prefix + entry.name


def _scan_folder(root: Path) -> pd.DataFrame:
    rows = []
    for rel in _image_files(root):
        parts = rel.split("/")
        if len(parts) >= 3 and parts[0].lower() in SPLIT_ALIASES:
            rows.append({"path": rel, "label": parts[1], "split": parts[0]})
        elif len(parts) >= 2:
            rows.append({"path": rel, "label": parts[0], "split": ""})
    return pd.DataFrame(rows, columns=["path", "label", "split"])
