"""Stains of the synthetic sites and Beer-Lambert rendering of concentration maps to RGB.

``RGB = 255 * exp(-(cH * vH + cE * vE))`` with the optical-density vectors ``v`` and
intensities of the patient's site; ``stain_shift`` moves them towards a clearly different lab.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from histoflow.data.synthetic.canvas import Canvas, noise

__all__ = ["SHIFT_SITE", "SITES", "Stain", "jitter", "render", "site_stain"]

_F = np.float32
SITES = ("site_a", "site_b", "site_c")
SHIFT_SITE = "site_shift"
# Optical-density colour vectors (R, G, B) and intensities per site: mild lab-to-lab variation.
_STAINS = {
    "site_a": ((0.58, 0.76, 0.30), (0.10, 0.88, 0.42), 1.00, 1.00),
    "site_b": ((0.54, 0.79, 0.33), (0.14, 0.86, 0.46), 0.92, 1.08),
    "site_c": ((0.62, 0.73, 0.28), (0.08, 0.90, 0.38), 1.08, 0.93),
}
# Where stain_shift=1 moves the vectors: bluer hematoxylin, pinker eosin (both from site_a).
_SHIFT_H = (0.76, 0.62, 0.18)
_SHIFT_E = (0.00, 0.92, 0.18)


@dataclass(frozen=True)
class Stain:
    """A slide's H&E stain: unit optical-density vectors and intensities of H and E."""

    v_h: np.ndarray  # (3,) unit optical-density vector, R G B
    v_e: np.ndarray
    i_h: float
    i_e: float


def _unit(v) -> np.ndarray:
    v = np.clip(np.asarray(v, np.float64), 0.0, None)
    return v / np.linalg.norm(v)


def site_stain(site: str, shift: float) -> Stain:
    """The site's stain, or for ``shift`` > 0 site_a's moved towards a clearly different lab."""
    v_h, v_e, i_h, i_e = _STAINS[site if shift == 0 else SITES[0]]
    return Stain(
        _unit(np.add(v_h, shift * np.subtract(_SHIFT_H, v_h))),
        _unit(np.add(v_e, shift * np.subtract(_SHIFT_E, v_e))),
        i_h * (1 + 0.5 * shift),  # stronger hematoxylin
        i_e / (1 + 0.5 * shift),  # paler eosin
    )


def jitter(stain: Stain, rng: np.random.Generator, sd: float) -> Stain:
    """``stain`` with each intensity scaled by a log-normal factor of log-std ``sd``."""
    j_h, j_e = rng.lognormal(0.0, sd, 2)
    return Stain(stain.v_h, stain.v_e, stain.i_h * j_h, stain.i_e * j_e)


def render(rng, cv: Canvas, c_h, c_e, stain: Stain) -> np.ndarray:
    """Beer-Lambert rendering of concentration maps (S, S) to RGB uint8 (S, S, 3)."""
    c_h = np.clip(c_h, 0, None) * (1 + 0.12 * noise(rng, cv, 0.4))  # chromatin texture
    c_h = ndimage.gaussian_filter(c_h, 0.5)  # optical blur, in pixels
    c_e = ndimage.gaussian_filter(np.clip(c_e, 0, None), 0.5)
    od = (
        c_h[..., None] * (stain.i_h * stain.v_h) + c_e[..., None] * (stain.i_e * stain.v_e)
    ).astype(_F)
    rgb = 255 * np.exp(-(od + 0.04)) + rng.normal(0, 2.0, od.shape).astype(_F)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
