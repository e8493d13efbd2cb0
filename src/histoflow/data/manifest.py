"""The per-image table that stages pass to each other: its splits, reading it, class order.

``validate`` writes the validated manifest (parquet); later stages, flows and monitoring read
it, and the CSV tables derived from it (captions, the feature index, predictions), through
:func:`read_manifest`.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pandas as pd

__all__ = ["SPLITS", "class_names", "is_text_path", "printable_path", "read_manifest"]

# The splits every dataset ends up with, in the order images are kept in when deduplicating.
SPLITS: tuple[str, ...] = ("train", "val", "test")


def read_manifest(path: Path, columns: Collection[str] | None = None) -> pd.DataFrame:
    """Read a table passed between stages: the validated manifest (parquet) or a CSV output.

    Args:
        path: the table.
        columns: read only these columns (those the table has); None = all. A stage that
            needs a few columns of a per-tile table then holds only those (a caption is
            hundreds of bytes per tile).

    Raises:
        FileNotFoundError: the file does not exist (the stage that writes it has not run).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path} not found: run `histoflow stage validate` (or `dvc repro`) first"
        )
    wanted = None if columns is None else set(columns)
    if Path(path).suffix == ".parquet":
        if wanted is None:
            return pd.read_parquet(path)
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        return pd.read_parquet(path, columns=[c for c in names if c in wanted])
    return pd.read_csv(
        path,
        dtype={"path": str, "label": str, "split": str, "patient_id": str, "sha256": str},
        keep_default_na=False,
        na_values=[""],
        usecols=None if wanted is None else (lambda c: c in wanted),
    )


def class_names(manifest: pd.DataFrame) -> list[str]:
    """Sorted class names; their order defines the label indices everywhere."""
    return sorted(manifest["label"].unique())


def is_text_path(path: str) -> bool:
    """Whether ``path`` is valid text: the manifest, reports and MLflow store paths as UTF-8.

    A file name that is not valid UTF-8 reaches Python with its bad bytes as lone surrogates
    (``os.fsdecode``), which no UTF-8 writer accepts.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_path(path: str) -> str:
    r"""``path`` with the bytes of a non-UTF-8 file name escaped as ``\\xNN``, for text output."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes of a non-UTF-8 name
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    # The same object, not an equal copy: a table's labels and patient ids share a few
    # strings, which a copy per row turned into ~0.2 KB more per tile.
    return path
