"""Import an image folder: ``<src>/<class>/**/*`` or ``<src>/<split>/<class>/**/*``.

Files are copied unchanged, keeping their path under the class folder. A path found in two
split folders (``train/a/x.png`` and ``test/a/x.png``) keeps its split in the output path.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from histoflow.data.ingest._common import Plan, require_images, scan
from histoflow.data.ingest.sources import SPLIT_ALIASES, DataError

__all__ = ["plan"]


def plan(src: Path) -> Plan:
    """The images under the folder ``src`` with their class (and split) from their folders.

    Raises:
        DataError: no image is in a class folder, or split folders and class folders are
            mixed at the top level.
    """
    images, skipped = scan(src)
    entries = []  # (file, class, split, path under the class folder)
    for file in images:
        parts = file.relative_to(src).parts
        if len(parts) >= 3 and parts[0].lower() in SPLIT_ALIASES:
            entries.append((file, parts[1], SPLIT_ALIASES[parts[0].lower()], "/".join(parts[2:])))
        elif len(parts) >= 2:
            entries.append((file, parts[0], "", "/".join(parts[1:])))
        else:
            skipped.append(parts[0])  # an image directly in src has no class
    require_images(
        entries, src, "<src>/<class>/**/<image> or <src>/<split>/<class>/**/<image>", skipped
    )
    if len({bool(split) for _, _, split, _ in entries}) > 1:
        raise DataError(
            f"{src} mixes split folders (train/val/test) with class folders; put every class "
            "folder under a split folder, or none"
        )
    # A path found in two splits keeps its split in the output path; all others stay short.
    clashes = Counter(f"{label}/{sub}".casefold() for _, label, _, sub in entries)
    items = []
    for file, label, split, sub in entries:
        rel = f"{label}/{sub}"
        rel = f"{split}/{rel}" if split and clashes[rel.casefold()] > 1 else rel
        items.append((file, rel, {"label": label, **({"split": split} if split else {})}))
    return len(items), items, skipped
