"""What the format importers share: the plan each returns, and scanning and naming rules."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from histoflow.data.images import IMAGE_SUFFIXES
from histoflow.data.ingest.sources import DataError
from histoflow.data.manifest import is_text_path, printable_path

__all__ = ["SHOWN", "Item", "Plan", "require_images", "safe_name", "scan"]

SHOWN = 5  # skipped files named in a message (import.json keeps up to 100)

# One image to write: a source file to copy or pixels to save as PNG, its wanted path under out,
# and its manifest fields besides path.
Item = tuple["Path | np.ndarray", str, dict[str, str]]
Plan = tuple[int, Iterable[Item], list[str]]  # number of images, the images, skipped files


def scan(src: Path) -> tuple[list[Path], list[str]]:
    """Image files under ``src`` and the other (non-hidden) files, which will be reported.

    A file whose name is not valid UTF-8 is one of the others (named with its bytes escaped):
    no manifest could hold its name.
    """
    if not src.is_dir():
        raise DataError(f"expected a folder of images, got the file {src}")
    images, others = [], []
    for file in sorted(src.rglob("*")):
        rel = file.relative_to(src)
        if not file.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if not is_text_path(rel.as_posix()):
            others.append(f"{printable_path(rel.as_posix())} (file name not UTF-8: rename it)")
        else:
            (images if file.suffix.lower() in IMAGE_SUFFIXES else others).append(rel.as_posix())
    return [src / rel for rel in images], others


def require_images(items: Sequence, src: Path, looked_for: str, skipped: list[str]) -> None:
    """Raise a :class:`DataError` saying what was looked for when ``items`` is empty."""
    if not items:
        also = f"; skipped {len(skipped)} other file(s), e.g. {skipped[:SHOWN]}" if skipped else ""
        raise DataError(f"no images found in {src}: looked for {looked_for}{also}")


def safe_name(label: str) -> str:
    """A label as one folder name: labels come from user data and may hold slashes or dots."""
    name = re.sub(r'[/\\:*?"<>|\x00-\x1f]', "_", str(label)).strip()
    return f"_{name}" if not name or name.startswith(".") else name
