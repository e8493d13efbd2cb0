"""The per-image table that stages pass to each other: its splits, reading it, class order.

``validate`` writes the validated manifest (parquet); later stages, flows and monitoring read
it, and the CSV tables derived from it (captions, the feature index, predictions), through
:func:`read_manifest`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path

import pandas as pd

__all__ = [
    "SPLITS",
    "class_names",
    "is_text_path",
    "manifest_batches",
    "printable_path",
    "read_manifest",
]

# The splits every dataset ends up with, in the order images are kept in when deduplicating.
SPLITS: tuple[str, ...] = ("train", "val", "test")


def read_manifest(
    path: Path, columns: Collection[str] | None = None, *, arrow_strings: bool = False
) -> pd.DataFrame:
    """Read a table passed between stages: the validated manifest (parquet) or a CSV output.

    Args:
        path: the table.
        columns: read only these columns (those the table has); None = all. A stage that
            needs a few columns of a per-tile table then holds only those (a caption is
            hundreds of bytes per tile).
        arrow_strings: parquet only: every column Arrow-backed (``pd.ArrowDtype``), so text is
            its bytes, not a Python object per value (~60 bytes less per value).

    Raises:
        FileNotFoundError: the file does not exist (the stage that writes it has not run).
    """
    _require(path)
    wanted = None if columns is None else set(columns)
    if Path(path).suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        picked = names if wanted is None else [c for c in names if c in wanted]
        if not arrow_strings:
            return pd.read_parquet(path, columns=picked)
        import pyarrow as pa

        frame = pq.read_table(path, columns=picked).to_pandas(types_mapper=pd.ArrowDtype)
        pa.default_memory_pool().release_unused()  # see manifest_batches
        return frame
    return pd.read_csv(
        path,
        dtype={"path": str, "label": str, "split": str, "patient_id": str, "sha256": str},
        keep_default_na=False,
        na_values=[""],
        usecols=None if wanted is None else (lambda c: c in wanted),
    )


def manifest_batches(path: Path, columns: Collection[str], rows: int) -> Iterator[pd.DataFrame]:
    """The validated manifest ``rows`` rows at a time (the last fewer), only ``columns`` it has.

    A stage that passes over every tile holds one batch, not the table: read whole, a
    manifest's text columns are a Python object per value (~1 KB per tile for captions').

    Raises:
        FileNotFoundError: the file does not exist (validate has not run).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    _require(path)
    file = pq.ParquetFile(path)
    names = [name for name in file.schema_arrow.names if name in columns]
    for batch in file.iter_batches(rows, columns=names):
        yield batch.to_pandas()
    # Arrow's allocator keeps the pages a pass freed: give them back for the next pass to use
    # (without this the captions stage's peak at 100,000 tiles was 15 MB higher).
    pa.default_memory_pool().release_unused()


def _require(path: Path) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path} not found: run `histoflow stage validate` (or `dvc repro`) first"
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
