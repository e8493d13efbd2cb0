"""Atomic file writes: a reader never sees a half-written artifact, and a failure keeps the old one."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["atomic_dir", "atomic_path", "write_json", "write_parquet"]

# mkstemp/mkdtemp create owner-only files; finished artifacts get the usual permissions.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Args:
        path: Final location of the file.

    Yields:
        A temporary path in the same folder (same file system, so the rename is atomic).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; swap it in for ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_PARQUET_ROWS = 16_384  # rows converted to Arrow at a time by write_parquet


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``frame`` (its columns, not its index) as parquet, atomically, a slice at a time.

    ``DataFrame.to_parquet`` converts the whole frame to Arrow first: a second copy of a
    per-tile table (~0.25 KB per tile for validate's manifest). Here only one column is
    converted whole, to read the schema; rows then go ``_PARQUET_ROWS`` at a time. The file
    reads back as ``to_parquet``'s would: same columns, types and pandas dtypes.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, max(len(frame), 1), _PARQUET_ROWS):
            rows = frame.iloc[start : start + _PARQUET_ROWS]
            writer.write_table(pa.Table.from_pandas(rows, schema=schema, preserve_index=False))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        text = json.dumps(
            _finite(obj), indent=2, sort_keys=True, default=_jsonable, allow_nan=False
        )
        tmp.write_text(text + "\n")


def _finite(value: Any) -> Any:
    # JSON has no NaN: an undefined metric (e.g. AUROC with a class absent) is written as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    # numpy scalars and paths appear in metrics; everything else is a bug worth raising on.
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
