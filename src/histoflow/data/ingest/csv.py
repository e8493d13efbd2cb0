"""Import a CSV file of ``path,label`` rows (paths relative to the CSV) and any other columns.

Every column but ``path`` goes into the manifest unchanged (``split``, ``patient_id`` and
grouping columns); rows whose path is not an image file are skipped and reported.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from histoflow.data.images import IMAGE_SUFFIXES
from histoflow.data.ingest._common import Plan, require_images, safe_name
from histoflow.data.ingest.sources import DataError

__all__ = ["plan"]


def plan(src: Path) -> Plan:
    """The images the CSV file ``src`` lists, each under its label's folder.

    Raises:
        DataError: ``src`` is not a readable CSV, lacks ``path`` or ``label``, has an empty
            one, or names an image that does not exist (the message gives the line).
    """
    if not src.is_file():
        raise DataError(f"csv format expects a CSV file, got the folder {src}")
    try:
        table = pd.read_csv(src, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{src}: not a readable CSV: {exc}") from None
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise DataError(
            f"{src}: missing column(s) {missing} (found {list(table.columns)}); expected "
            "path,label and optionally split,patient_id and grouping columns"
        )
    # Line numbers count the header as line 1, so table row i is line i + 2.
    empty = table.index[table["path"].isna() | table["label"].isna()]
    if len(empty):
        raise DataError(f"{src}: empty path or label on line(s) {(empty + 2).tolist()[:10]}")
    files = [p if p.is_absolute() else src.parent / p for p in map(Path, table["path"])]
    keep = [i for i, f in enumerate(files) if f.suffix.lower() in IMAGE_SUFFIXES]
    skipped = [f"line {i + 2}: {table.at[i, 'path']}" for i in table.index.difference(keep)]
    absent = [i for i in keep if not files[i].is_file()]
    if absent:
        raise DataError(
            f"{src} line {absent[0] + 2}: image {table.at[absent[0], 'path']!r} not found at "
            f"{files[absent[0]]} ({len(absent)} missing in all, on lines "
            f"{[i + 2 for i in absent[:10]]}); paths are relative to the CSV's folder"
        )
    require_images(keep, src, "rows whose path is an image file", skipped)
    fields = table.drop(columns="path").to_dict("records")
    items = [
        (files[i], f"{safe_name(table.at[i, 'label'])}/{files[i].name}", fields[i]) for i in keep
    ]
    return len(items), items, skipped
