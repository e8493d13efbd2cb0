"""The validation report's figures: a montage of tiles per class, QC histograms per split.

Each is returned as PNG bytes, for the report to embed in its page and save beside it.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

# A bare Figure renders with Agg and touches no pyplot state or display.
from matplotlib.figure import Figure
from PIL import Image

from histoflow.data.images import DEFAULT_MAX_PIXELS, open_image
from histoflow.data.manifest import SPLITS
from histoflow.data.quality.features import to_rgb_float

__all__ = ["HISTOGRAM_FEATURES", "class_montage", "feature_histograms"]

HISTOGRAM_FEATURES: tuple[str, ...] = (
    "brightness",
    "contrast",
    "blur",
    "tissue_fraction",
    "od_hematoxylin",
    "od_eosin",
)
_TILE = 64  # montage tile side, px
_GAP = 2  # white space between tiles, px
_BINS = 30


def class_montage(
    table: pd.DataFrame,
    label: str,
    root: Path,
    limit: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> bytes | None:
    """PNG of up to ``limit`` tiles of ``label``, spread over the table; None if none load.

    Args:
        table: The per-image table (``path``, ``label``, ``readable``).
        label: The class whose readable images are shown.
        root: Folder the table's paths are relative to.
        limit: Most tiles; evenly spaced over the class's rows when it has more.
        max_pixels: An image with more pixels is left out, undecoded.
    """
    paths = table.loc[(table["label"] == label) & _readable(table), "path"].dropna().tolist()
    if len(paths) > limit:  # evenly spaced rather than the first few: more sites and patients
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
    tiles = [t for t in (_tile(root / p, max_pixels) for p in paths) if t is not None]
    if not tiles:
        return None
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    step = _TILE + _GAP
    sheet = Image.new("RGB", (cols * step - _GAP, rows * step - _GAP), "white")
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % cols) * step, (k // cols) * step))
    return _png(sheet)


def _tile(path: Path, max_pixels: int) -> Image.Image | None:
    try:
        with open_image(path, max_pixels=max_pixels) as img:
            img.draft("RGB", (_TILE, _TILE))  # JPEG: decode at reduced scale, much faster
            img.thumbnail((_TILE, _TILE))
            rgb = (to_rgb_float(img) * 255).round().astype(np.uint8)  # (h, w, 3)
    except Exception:  # a file that vanished or broke since QC just leaves a gap
        return None
    small = Image.fromarray(rgb)
    scale = _TILE / max(small.size)  # > 1 for tiles smaller than _TILE
    small = small.resize((round(small.width * scale), round(small.height * scale)))
    tile = Image.new("RGB", (_TILE, _TILE), "white")
    tile.paste(small, ((_TILE - small.width) // 2, (_TILE - small.height) // 2))
    return tile


def feature_histograms(table: pd.DataFrame) -> bytes | None:
    """PNG with one panel per QC feature, one outline histogram per split.

    Args:
        table: The per-image table; of :data:`HISTOGRAM_FEATURES`, those it has are drawn,
            over its readable images.

    Returns:
        The PNG, or None when the table has none of the features.
    """
    features = [f for f in HISTOGRAM_FEATURES if f in table]
    if not features:
        return None
    readable = table.loc[_readable(table), [*features, "split"]]  # not every column's copy
    splits = [*SPLITS, *sorted(set(readable["split"].dropna()) - set(SPLITS))]
    fig = Figure(figsize=(12, 6.5), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    for ax, feature in zip(axes, features, strict=False):
        values = pd.to_numeric(readable[feature], errors="coerce")
        finite = values[np.isfinite(values)]
        ax.set_title(feature)
        if finite.empty:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            continue
        low, high = finite.min(), finite.max()
        if feature == "blur":
            # The variance of the Laplacian spans decades: log bins keep sharp and soft apart.
            # Below 1 an image is flat; those land in the first bin.
            bins = np.geomspace(1.0, max(high, 10.0), _BINS + 1)
            values = values.clip(lower=1.0)
            ax.set_xscale("log")
        else:
            bins = np.linspace(low, high if high > low else low + 1, _BINS + 1)
        for split in splits:
            part = values[(readable["split"] == split) & np.isfinite(values)]
            if len(part):
                ax.hist(part, bins=bins, histtype="step", linewidth=1.5, label=split)
        ax.set_ylabel("images")
    for ax in axes[len(features) :]:
        ax.set_axis_off()
    axes[0].legend(title="split")
    return _png(fig)


def _readable(table: pd.DataFrame) -> pd.Series:
    return table["readable"].astype("boolean").fillna(False).astype(bool)


def _png(image: Image.Image | Figure) -> bytes:
    buffer = io.BytesIO()
    if isinstance(image, Figure):
        image.savefig(buffer, format="png", dpi=80)
    else:
        image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
