"""Caption gallery: a few tiles per class with their captions, as one self-contained HTML page.

Thumbnails are embedded as base64 PNG, so the page can be mailed or attached to a run as is.
Small tiles are enlarged with nearest-neighbour resampling, so a 32 px tile shows its pixels
rather than a blur; everything taken from the table is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from histoflow.data.images import DEFAULT_MAX_PIXELS, load_rgb
from histoflow.io import atomic_path

__all__ = ["THUMBNAIL_PX", "write_gallery"]

THUMBNAIL_PX = 128
# zlib level 3 encodes a 128 px thumbnail ~3x faster than Pillow's default 6 for ~6% more bytes;
# the gallery is rewritten on every run, cached or not, so its cost is the cached run's floor.
_PNG_COMPRESS = 3

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
figure { width: 16em; margin: 0; }
img { image-rendering: pixelated; border: 1px solid #ccc; }
figcaption { font-size: 0.85em; }
.path { color: #777; font-size: 0.8em; word-break: break-all; }
"""


def write_gallery(
    table: pd.DataFrame,
    out_dir: Path,
    *,
    data_root: Path,
    per_class: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    captions: Callable[[pd.DataFrame], Sequence[str]] | None = None,
) -> Path:
    """Write ``out_dir/gallery.html`` showing ``per_class`` captioned tiles of each class.

    Tiles are spread evenly over each class's rows sorted by path, so the same table always
    shows the same tiles.

    Args:
        table: One row per image, with columns ``path`` (relative to ``data_root``), ``label``
            and ``caption`` (or see ``captions``); ``backend`` and ``model``, if present, go
            in the page's header.
        out_dir: Folder for ``gallery.html``; created if missing.
        data_root: Folder the paths in ``table`` are relative to.
        per_class: Tiles shown per class (fewer when a class has fewer images).
        max_pixels: Most pixels an image may have (checked before decoding).
        captions: The captions of the rows shown (a few per class, all classes in one call,
            in the page's order), when ``table`` has no ``caption`` column: a large table need
            not hold every caption. The rows keep ``table``'s index.

    Returns:
        Path of the written page.
    """
    groups = [
        (str(label), len(rows), _pick(rows, per_class))
        for label, rows in table.groupby("label", sort=True)
    ]
    texts: list[str] = []
    if groups:  # the captions of every tile shown in one look-up, however many classes
        shown = pd.concat([picked for _, _, picked in groups])
        texts = list(shown["caption"] if captions is None else captions(shown))
    sections, start = [], 0
    for label, n_rows, picked in groups:
        end = start + len(picked)
        sections.append(
            _section(label, n_rows, picked, texts[start:end], Path(data_root), max_pixels)
        )
        start = end
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8"><title>Caption gallery</title>',
            f"<style>{_STYLE}</style></head><body>",
            "<h1>Caption gallery</h1>",
            f"<p>{_describe(table, per_class)}</p>",
            *sections,
            "</body></html>",
        ]
    )
    out = Path(out_dir) / "gallery.html"
    with atomic_path(out) as tmp:
        tmp.write_text(page + "\n", encoding="utf-8")
    return out


def _describe(table: pd.DataFrame, per_class: int) -> str:
    source = ", ".join(
        f"{name} {html.escape(str(table[name].iloc[0]))}"
        for name in ("backend", "model")
        if name in table and len(table)
    )
    return (
        f"{len(table)} images, {table['label'].nunique()} classes; up to {per_class} per class"
        + (f"; {source}" if source else "")
    )


def _pick(rows: pd.DataFrame, per_class: int) -> pd.DataFrame:
    """The ``per_class`` rows of one class shown: spread evenly over its rows sorted by path."""
    rows = rows.sort_values("path", kind="stable")
    return rows.iloc[_spread(len(rows), per_class)]


def _section(
    label: str,
    n_rows: int,
    shown: pd.DataFrame,
    texts: Sequence[str],
    data_root: Path,
    max_pixels: int,
) -> str:
    figures = [
        _figure(data_root / path, path, caption, max_pixels)
        for path, caption in zip(shown["path"], texts, strict=True)
    ]
    return "\n".join(
        [
            f"<h2>{html.escape(label)} <small>({n_rows} images)</small></h2>",
            '<div class="grid">',
            *figures,
            "</div>",
        ]
    )


def _spread(n: int, k: int) -> np.ndarray:
    """``min(n, k)`` distinct indices spread evenly over ``0..n-1``, first and last included."""
    if n == 0 or k <= 0:
        return np.zeros(0, dtype=int)
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))


def _figure(file: Path, path: str, caption: str, max_pixels: int) -> str:
    return (
        f'<figure><img src="data:image/png;base64,{_thumbnail_b64(file, max_pixels)}" '
        f'alt="{html.escape(path)}"><figcaption>{html.escape(str(caption))}'
        f'<div class="path">{html.escape(path)}</div></figcaption></figure>'
    )


def _thumbnail_b64(file: Path, max_pixels: int) -> str:
    image = load_rgb(file, max_pixels=max_pixels)
    scale = THUMBNAIL_PX / max(image.size)
    size = tuple(max(1, round(side * scale)) for side in image.size)
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    buffer = io.BytesIO()
    image.resize(size, resample).save(buffer, format="PNG", compress_level=_PNG_COMPRESS)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
