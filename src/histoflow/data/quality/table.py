"""Measure many image files into the QC table, in worker processes and with a row cache.

One row per file (:func:`~histoflow.data.quality.features.image_features`), in the order the
paths come. Worker processes decode in parallel; a parquet cache keyed by path, size, mtime
and content hash lets a re-run decode only what changed. A file whose name is not valid UTF-8
gets an unreadable row saying so (no table or report could store its name).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from histoflow.data.images import DEFAULT_MAX_PIXELS
from histoflow.data.manifest import is_text_path
from histoflow.data.quality.features import (
    DRIFT_FEATURES,
    INT_COLUMNS,
    QC_COLUMNS,
    features_from_bytes,
    read_bytes,
    unopenable_row,
)
from histoflow.io import write_parquet

__all__ = ["feature_table"]

# Cache-only column: with the path, size and sha256 it decides whether a cached row is current.
_CACHE_KEY = "mtime_ns"
# Worker processes fork from a clean server process ("forkserver"), never from the caller: the
# caller may hold torch, CUDA or BLAS thread pools, and forking a process with running threads
# can copy a held lock into the child and hang it (Python 3.12 warns about it, 3.14 made
# forkserver the default). The server imports this module once (see _imap), so a pool starts
# in ~0.3 s after the first (~1.5 s) instead of ~4 s of imports per worker with "spawn" or a
# bare forkserver; "fork" starts in ~0.3 s too but inherits the caller's threads.
_MP_CONTEXT = "forkserver"
_MAX_CHUNKSIZE = 64
_TABLE_CHUNK = 4096  # measured rows turned into columns at a time
_worker_limits = None  # keeps the worker's threadpoolctl limits alive


def feature_table(
    paths: Iterable[Path],
    *,
    workers: int = 0,
    cache: Path | None = None,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> pd.DataFrame:
    """Measure many images into a table, one image in memory per process at a time.

    Args:
        paths: Image files; streamed, so a generator over a large folder is fine.
        workers: Decode in this many worker processes (0: in this process). Rows come back in
            the order of ``paths`` either way.
        cache: Parquet file of rows from earlier runs. A path's cached row is reused when the
            file's size and mtime match *and* the sha256 of its current bytes equals the
            cached one (hashing is much cheaper than decoding); other paths are measured
            again. The file is then rewritten with the rows of this run's paths only, plus
            an ``mtime_ns`` column. A missing cache is created; an unreadable one is ignored
            with a warning. The returned table is the same with or without a cache.
        progress: Show a tqdm progress bar.
        max_pixels: An image with more pixels is not decoded: its row is unreadable, with
            the reason in ``error`` (width and height come from its header). A cached row
            that another limit could change is measured again.

    Returns:
        One row per path: a leading ``path`` column (``str(path)``) then
        :data:`~histoflow.data.quality.features.QC_COLUMNS`. ``width``, ``height``, ``bytes``
        and ``bit_depth`` (``INT_COLUMNS``) are nullable integers (``Int64``)
        so the dtype does not change when an unreadable file is present.

    Raises:
        ValueError: ``workers`` is negative.
    """
    if workers < 0:
        raise ValueError(f"workers must be 0 (in-process) or a number of processes, got {workers}")
    total = len(paths) if hasattr(paths, "__len__") else None
    cached_rows, cached_keys = _read_cache(Path(cache)) if cache is not None else ({}, {})
    # A changed max_pixels re-judges the rows it could change (see _reusable).
    jobs = (
        (str(path), _reusable(cached_rows, cached_keys, str(path), max_pixels), max_pixels)
        for path in paths
    )

    chunks, rows, mtimes = [], [], []
    results = _imap(_measure, jobs, workers=workers, total=total)
    for path, row, mtime_ns in tqdm(
        results, total=total, desc="qc", unit="img", disable=not progress
    ):
        rows.append({"path": path, **(cached_rows[path] if row is None else row)})
        mtimes.append(mtime_ns)
        if len(rows) == _TABLE_CHUNK:  # rows as dicts cost ~3 KB each: columns a tenth
            chunks.append(_to_table(rows))
            rows = []
    chunks.append(_to_table(rows))
    table = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
    del chunks
    if cache is not None:
        _write_cache(Path(cache), table, mtimes)
    return table


def _reusable(rows: dict, keys: dict, path: str, max_pixels: int) -> tuple | None:
    """The cache key of ``path``'s row if that row stands under ``max_pixels``, else None.

    A readable image's row stands while it is within the limit. An unreadable file whose
    header gave a size is measured again: the limit may have been what refused it (a
    truncated file costs one more failed decode). Other unreadable rows stand.
    """
    row = rows.get(path)
    if row is None:
        return None
    pixels = row["width"] * row["height"]  # NaN when no header could be read
    stale = pixels > max_pixels if row["readable"] else pd.notna(pixels)
    return None if stale else keys.get(path)


def _measure(job: tuple[str, tuple | None, int]) -> tuple[str, dict | None, int | None]:
    """Row for one path, or None when the cached row is still current; runs in the workers.

    ``job`` is ``(path, expected, max_pixels)`` with ``expected = (bytes, mtime_ns, sha256)``
    of the cached row, or None. Returns ``(path, row or None, mtime_ns or None)``.
    """
    path, expected, max_pixels = job
    if not is_text_path(path):
        reason = "file name is not valid UTF-8, so no manifest or report can hold it: rename it"
        return path, unopenable_row(reason), None
    try:
        data, stat = read_bytes(path)
    except OSError as exc:
        return path, unopenable_row(exc), None
    sha256 = hashlib.sha256(data).hexdigest()
    if expected == (len(data), stat.st_mtime_ns, sha256):
        return path, None, stat.st_mtime_ns
    return path, features_from_bytes(data, sha256, max_pixels=max_pixels), stat.st_mtime_ns


def _imap(func: Callable, jobs: Iterable, *, workers: int, total: int | None) -> Iterator:
    # Results in the order of jobs. Pool.imap reads jobs ahead (they are only paths) and hands
    # back rows, so no decoded image ever crosses a process boundary.
    if workers == 0:
        yield from map(func, jobs)
        return
    # Chunks amortise the inter-process round trip; several per worker keep the tail short.
    if total is None:
        chunksize = _MAX_CHUNKSIZE // 4
    else:
        chunksize = max(1, min(_MAX_CHUNKSIZE, total // (4 * workers)))
    context = multiprocessing.get_context(_MP_CONTEXT)
    if _MP_CONTEXT == "forkserver":
        # Takes effect when the server first starts; "__main__" is the default preload.
        context.set_forkserver_preload(["__main__", __name__])
    with context.Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap(func, jobs, chunksize=chunksize)


def _init_worker() -> None:
    # Each worker already keeps a core busy; BLAS threads inside it would oversubscribe.
    global _worker_limits
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: numpy's own matmuls here are too small to thread anyway
        return
    _worker_limits = threadpool_limits(limits=1)


def _to_table(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=["path", *QC_COLUMNS])
    return table.astype(
        {
            "readable": bool,
            **dict.fromkeys(INT_COLUMNS, "Int64"),
            **dict.fromkeys(DRIFT_FEATURES, "float64"),
        }
    )


def _read_cache(path: Path) -> tuple[dict[str, dict], dict[str, tuple]]:
    # Returns (rows by path, (bytes, mtime_ns, sha256) by path); empty when there is no cache.
    if not path.exists():
        return {}, {}
    try:
        table = pd.read_parquet(path)
        missing = sorted({"path", _CACHE_KEY, *QC_COLUMNS} - set(table.columns))
        if missing:
            raise ValueError(f"columns {missing} are missing (written by another version?)")
        table = table.drop_duplicates("path", keep="last")
        # NaN, not pd.NA, for unknown integers: cached rows then build the same table as
        # freshly measured ones.
        table = table.astype(dict.fromkeys(INT_COLUMNS, "float64"))
        keys = {
            path: (int(size), int(mtime_ns), sha256)
            for path, size, mtime_ns, sha256 in zip(
                table["path"], table["bytes"], table[_CACHE_KEY], table["sha256"], strict=True
            )
            if pd.notna(size) and pd.notna(mtime_ns)
        }
        rows = dict(zip(table["path"], table[list(QC_COLUMNS)].to_dict("records"), strict=True))
    except Exception as exc:  # a bad cache only costs time: measure everything again
        warnings.warn(
            f"ignoring the QC cache {path}: {exc}; every image is measured again and the "
            "cache rewritten",
            stacklevel=3,
        )
        return {}, {}
    return rows, keys


def _write_cache(path: Path, table: pd.DataFrame, mtimes: list[int | None]) -> None:
    # Copy-on-write: the cached rows share the table's columns (copies of it were ~0.4 KB per
    # tile at 100,000 tiles), and the file is written a slice at a time.
    with pd.option_context("mode.copy_on_write", True):
        cached = table.assign(**{_CACHE_KEY: pd.array(mtimes, dtype="Int64")})
        keep = ~cached["path"].duplicated(keep="last")
        keep &= cached["path"].map(is_text_path)  # parquet stores text; the row says why
        if not keep.all():
            cached = cached[keep]
    try:
        write_parquet(cached, path)
    except OSError as exc:  # the table is already measured; a later run just recomputes
        warnings.warn(f"could not write the QC cache {path}: {exc}", stacklevel=3)
