"""The per-image table that stages pass to each other: its splits, reading it, class order.

``validate`` writes the validated manifest (parquet); later stages, flows and monitoring read
it, and the CSV tables derived from it (captions, the feature index, predictions), through
:func:`read_manifest`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["SPLITS", "class_names", "is_text_path", "printable_path", "read_manifest"]

# The splits every dataset ends up with, in the order images are kept in when deduplicating.
SPLITS: tuple[str, ...] = ("train", "val", "test")


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a table passed between stages: the validated manifest (parquet) or a CSV output.

    Raises:
        FileNotFoundError: the file does not exist (the stage that writes it has not run).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path} not found: run `histoflow stage validate` (or `dvc repro`) first"
        )
    if Path(path).suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(
        path,
        dtype={"path": str, "label": str, "split": str, "patient_id": str, "sha256": str},
        keep_default_na=False,
        na_values=[""],
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
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
