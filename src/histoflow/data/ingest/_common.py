"""What the format importers share: the plan each returns, and scanning and naming rules."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from histoflow.data.images import IMAGE_SUFFIXES
from histoflow.data.ingest.sources import DataError

__all__ = ["SHOWN", "Item", "Plan", "require_images", "safe_name", "scan"]

SHOWN = 5  # skipped files named in a message (import.json keeps up to 100)

# One image to write: a source file to copy or pixels to save as PNG, its wanted path under out,
# and its manifest fields besides path.
Item = tuple["Path | np.ndarray", str, dict[str, str]]
Plan = tuple[int, Iterable[Item], list[str]]  # number of images, the images, skipped files


def scan(src: Path) -> tuple[list[Path], list[str]]:
    """Image files under ``src`` and the other (non-hidden) files, which will be reported."""
    if not src.is_dir():
        raise DataError(f"expected a folder of images, got the file {src}")
    images, others = [], []
    for file in sorted(src.rglob("*")):
        rel = file.relative_to(src)
        if file.is_file() and not any(part.startswith(".") for part in rel.parts):
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
