"""Stain normalisation (``data.stain_normalization``): torchstain's Macenko and Reinhard.

A target is fitted once, on many training tiles at once (a mosaic: one outlier tile cannot
set it), stored in the encoder's ``model.json`` and rebuilt from there wherever images enter
the model, so training, ``embed``, ``predict``, the pyfunc, serving and monitoring normalise
alike (:func:`histoflow.data.transforms.create_transform` places it).

Tiles without enough stained pixels (background, fat) have no stain to estimate: they pass
through unchanged and are counted (:attr:`StainNormalizer.n_passed_through`), as do the rare
tiles whose fit breaks down numerically.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torchvision import tv_tensors

__all__ = [
    "METHODS",
    "MIN_STAINED_FRACTION",
    "StainMethod",
    "StainNormalizer",
    "create_stain_normalizer",
    "fit_stain_target",
    "fit_stain_target_on_files",
    "stained_fraction",
]

StainMethod = Literal["none", "macenko", "reinhard"]
METHODS: tuple[str, ...] = ("none", "macenko", "reinhard")
# Macenko's transparency cut (optical density) and light intensity, torchstain's defaults.
_BETA, _IO = 0.15, 240
# Below this share of stained pixels a tile is background or fat: its stain fit is noise.
# Macenko estimates two stain vectors from the stained pixels' angles (percentiles), so it
# needs many; Reinhard needs only colour means and spreads over all pixels.
MIN_STAINED_FRACTION = {"macenko": 0.1, "reinhard": 0.03}
FIT_TILES = 512  # training tiles the target is fitted on: many, so no single tile sets it
_SLOTS = 64  # one counter per DataLoader worker, so workers never race on one number


def stained_fraction(image: torch.Tensor) -> float:
    """Share of a (3, H, W) uint8 tile's pixels with optical density >= 0.15 in every channel.

    Those are the pixels Macenko's method estimates stains from (torchstain's ``ODhat``).
    """
    od = -torch.log((image.float() + 1) / _IO)  # (3, H, W)
    return float((od >= _BETA).all(0).float().mean())


def _normalizer(method: str):
    import torchstain  # a few ms; kept out of import time of the data package

    if method == "macenko":
        return torchstain.normalizers.MacenkoNormalizer(backend="torch")
    if method == "reinhard":
        return torchstain.normalizers.ReinhardNormalizer(backend="torch")
    raise ValueError(
        f"data.stain_normalization: unknown method {method!r}; expected one of {METHODS}"
    )


def fit_stain_target(method: str, tiles: Iterable[torch.Tensor]) -> dict:
    """Fit ``method``'s target on many tiles and describe it as JSON-ready numbers.

    Args:
        method: ``macenko`` or ``reinhard``.
        tiles: (3, S, S) uint8 training tiles of one size; those below
            :data:`MIN_STAINED_FRACTION` of the method are left out of the fit.

    Returns:
        ``{"method", "n_tiles", "n_skipped", ...target}``: what :func:`create_stain_normalizer`
        rebuilds the normaliser from.

    Raises:
        ValueError: no tile has enough stained pixels to fit on.
    """
    tiles = list(tiles)
    _normalizer(method)  # an unknown method fails before any work
    kept = [t for t in tiles if stained_fraction(t) >= MIN_STAINED_FRACTION[method]]
    if not kept:
        raise ValueError(
            f"data.stain_normalization={method}: none of the {len(tiles)} training tiles has "
            f"{MIN_STAINED_FRACTION[method]:.0%} stained pixels to fit a stain target on; set "
            "data.stain_normalization: none for unstained images"
        )
    mosaic = torch.cat(kept, dim=-1)  # (3, S, S * N): one image, every kept tile's pixels
    norm = _normalizer(method)
    norm.fit(mosaic)
    target = {"method": method, "n_tiles": len(kept), "n_skipped": len(tiles) - len(kept)}
    if method == "macenko":
        target |= {"HERef": norm.HERef.tolist(), "maxCRef": norm.maxCRef.tolist()}
    else:
        target |= {"means": norm.target_means.tolist(), "stds": norm.target_stds.tolist()}
    return target


def fit_stain_target_on_files(
    method: str,
    root: Path,
    paths: Sequence[str],
    *,
    image_size: int,
    crop_to_foreground: bool = False,
    max_pixels: int | None = None,
    max_tiles: int = FIT_TILES,
    seed: int = 0,
) -> dict:
    """:func:`fit_stain_target` on up to ``max_tiles`` of ``paths`` (a seeded sample).

    Each tile is prepared as the model sees it (:func:`~histoflow.data.transforms.decode_transform`:
    cropped when ``crop_to_foreground``, resized to ``image_size``).
    """
    from histoflow.data.images import DEFAULT_MAX_PIXELS, load_rgb
    from histoflow.data.transforms import decode_transform

    paths = list(paths)
    if len(paths) > max_tiles:
        pick = np.random.default_rng(seed).choice(len(paths), max_tiles, replace=False)
        paths = [paths[i] for i in sorted(pick)]
    prepare = decode_transform(image_size, crop_to_foreground=crop_to_foreground)
    limit = max_pixels or DEFAULT_MAX_PIXELS
    tiles = [
        prepare(load_rgb(Path(root) / p, max_pixels=limit)).as_subclass(torch.Tensor) for p in paths
    ]
    return fit_stain_target(method, tiles)


class StainNormalizer(nn.Module):
    """Normalise a (3, H, W) uint8 tile to a fitted target; degenerate tiles pass through."""

    def __init__(self, target: dict):
        """Rebuild the normaliser :func:`fit_stain_target` described."""
        super().__init__()
        self.target = dict(target)
        self.method = target["method"]
        self._norm = _normalizer(self.method)
        if self.method == "macenko":
            self._norm.HERef = torch.tensor(target["HERef"], dtype=torch.float32)
            self._norm.maxCRef = torch.tensor(target["maxCRef"], dtype=torch.float32)
        else:
            self._norm.target_means = torch.tensor(target["means"], dtype=torch.float32)
            self._norm.target_stds = torch.tensor(target["stds"], dtype=torch.float32)
        # Shared memory: DataLoader workers count into the parent's tensor, one slot each.
        self._passed = torch.zeros(_SLOTS, dtype=torch.int64).share_memory_()

    @property
    def n_passed_through(self) -> int:
        """Tiles returned unchanged so far: too little stain, or a fit that broke down."""
        return int(self._passed.sum())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 tile -> the same tile in the target's stain (uint8, same type)."""
        out = self.normalize(image.as_subclass(torch.Tensor))
        return tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.Image) else out

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 tile -> normalised (3, H, W) uint8; degenerate tiles come back as is."""
        if stained_fraction(image) < MIN_STAINED_FRACTION[self.method]:
            return self._pass(image)
        try:
            if self.method == "macenko":
                out, _, _ = self._norm.normalize(image, Io=_IO, beta=_BETA, stains=False)
            else:
                out = self._norm.normalize(image)
            out = out.permute(2, 0, 1)  # torchstain answers (H, W, 3); the pipeline is (3, H, W)
        except (RuntimeError, torch.linalg.LinAlgError):  # e.g. a rank-deficient stain matrix
            return self._pass(image)
        if not torch.isfinite(out.float()).all():
            return self._pass(image)
        return out.clamp(0, 255).to(torch.uint8)

    def _pass(self, image: torch.Tensor) -> torch.Tensor:
        info = torch.utils.data.get_worker_info()
        self._passed[(info.id + 1) % _SLOTS if info else 0] += 1
        return image

    def extra_repr(self) -> str:
        """The method, for ``print(transform)``."""
        return f"method={self.method}"


def create_stain_normalizer(target: dict | None) -> StainNormalizer | None:
    """The normaliser of a model's stored target; None when the model normalises nothing."""
    if not target or target.get("method", "none") == "none":
        return None
    return StainNormalizer(target)
