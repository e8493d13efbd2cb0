"""Writing a planned import: the output folder's rules, the files, and ``import.json``."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from histoflow.data.ingest._common import Item
from histoflow.data.outdir import MARKER, check_output

__all__ = ["check_out", "summary", "write_items"]


def check_out(src: Path, out: Path, overwrite: bool) -> None:
    """Refuse an output that overlaps ``src``, or that overwriting could harm.

    See :func:`~histoflow.data.outdir.check_output` for what ``overwrite`` may replace.
    """
    check_output(out, overwrite=overwrite)
    # Replacing `out` deletes what it held, and scanning `src` would pick up an earlier import.
    if src.resolve().is_relative_to(out.resolve()) or (
        src.is_dir() and out.resolve().is_relative_to(src.resolve())
    ):
        raise ValueError(f"output {out} and source {src} overlap; write the import elsewhere")


def write_items(
    items: Iterable[Item], dst: Path, *, total: int, desc: str, progress: bool
) -> list[dict[str, str]]:
    """Copy or save each item under ``dst``; return the manifest rows, one per file written."""
    taken: set[str] = set()
    rows = []
    with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        for source, rel, fields in items:
            rel = _unique(rel, taken)
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, Path):
                shutil.copy2(source, target)  # the original bytes: no re-encoding
            else:  # no metadata, fixed compression: the same pixels always give the same bytes
                Image.fromarray(source).save(target, format="PNG", compress_level=6)
            rows.append({"path": rel, **fields})
            bar.update()
    return rows


def summary(fmt: str, src: Path, table: pd.DataFrame, skipped: list[str]) -> dict:
    """The content of ``import.json``: source, counts per class and split, skipped files."""
    folders = sorted({p.split("/")[0] + "/" for p in table["path"]})  # class or split folders
    return {
        "format": fmt,
        "source": str(src.resolve()),
        "n_images": len(table),
        "n_skipped": len(skipped),
        "skipped": skipped[:100],
        "classes": table["label"].value_counts().to_dict(),
        "splits": table["split"].value_counts().to_dict() if "split" in table else {},
        "created": [*folders, MARKER, "import.json", "manifest.csv"],  # top-level entries of out
    }


def _unique(rel: str, taken: set[str]) -> str:
    """``rel``, or ``rel`` with a numeric suffix if taken (case-insensitively, for macOS/Windows)."""
    path, candidate, n = PurePosixPath(rel), rel, 1
    while candidate.casefold() in taken:
        candidate = str(path.with_name(f"{path.stem}_{n}{path.suffix}"))
        n += 1
    taken.add(candidate.casefold())
    return candidate
