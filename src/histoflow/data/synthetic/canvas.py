"""Drawing primitives for synthetic tissue, in tissue units on a tile's pixel grid.

Geometry is defined in tissue units (a 20x tile is 64 units across whatever its pixel size);
at 40x the field of view halves, so nuclei look twice as large and four times fewer. Every
function draws from the generator it is given, so a tile's maps depend on its seed alone.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Canvas",
    "canvas",
    "ellipses",
    "fibres",
    "noise",
    "nuclei",
    "poisson_count",
    "random_points",
    "scattered_nuclei",
]

_F = np.float32


@dataclass(frozen=True)
class Canvas:
    """Pixel grid of one tile; ``y`` (S, 1) and ``x`` (1, S) are pixel centres in tissue units."""

    size: int
    px: float  # pixels per tissue unit
    y: np.ndarray
    x: np.ndarray

    @property
    def extent(self) -> float:
        """Side of the tile in tissue units."""
        return self.size / self.px


def canvas(size: int, magnification: int) -> Canvas:
    """The grid of a ``size`` px tile; 64 tissue units across at 20x (1), 32 at 40x (2)."""
    px = size / 64 * magnification
    c = ((np.arange(size) + 0.5) / px).astype(_F)
    return Canvas(size, px, c[:, None], c[None, :])


def noise(rng, cv: Canvas, sigma: float, across: float | None = None, theta: float = 0.0):
    """Smooth periodic Gaussian noise (S, S) with zero mean and unit std.

    Filtered in Fourier space: ``sigma`` is the correlation length (tissue units) along angle
    ``theta`` and ``across`` the one perpendicular to it, so ``across < sigma`` gives streaks.
    """
    fy, fx = _freqs(cv.size)
    f_along = fx * math.cos(theta) + fy * math.sin(theta)
    f_across = fy * math.cos(theta) - fx * math.sin(theta)
    s_a, s_c = sigma * cv.px, (sigma if across is None else across) * cv.px
    gain = np.exp(-2 * np.pi**2 * ((s_a * f_along) ** 2 + (s_c * f_across) ** 2))
    gain[0, 0] = 0.0  # zero mean: with long correlations the mean would swamp the fluctuations
    white = rng.standard_normal((cv.size, cv.size), dtype=_F)
    n = np.fft.irfft2(np.fft.rfft2(white) * gain, s=white.shape).astype(_F)
    return n / (n.std() + 1e-6)


@functools.cache
def _freqs(size: int) -> tuple[np.ndarray, np.ndarray]:
    # (S, 1) and (1, S//2+1) frequencies in cycles per pixel, laid out like rfft2's output.
    return np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :]


def random_points(rng: np.random.Generator, cv: Canvas, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uniform random centres ``(y, x)`` over the tile and a margin, in tissue units."""
    # A small margin so nuclei cut by the border appear as often as whole ones.
    lo, hi = -2.0, cv.extent + 2.0
    return rng.uniform(lo, hi, n), rng.uniform(lo, hi, n)


def poisson_count(rng: np.random.Generator, cv: Canvas, per_1000: float) -> int:
    """Poisson count for a density given per 1000 square tissue units."""
    return int(rng.poisson(max(per_1000, 0.0) * cv.extent**2 / 1000))


def ellipses(cv: Canvas, cy, cx, a, b, theta, value, hollow=0.0) -> np.ndarray:
    """Max-composite soft ellipses (S, S); centres and semi-axes in tissue units.

    ``hollow`` in [0, 1] pales the centre (vesicular chromatin) and keeps a dark rim.
    """
    size = cv.size
    out = np.zeros(size * size, _F)
    n = len(cy)
    cy, cx, a, b, theta, value, hollow = (
        np.broadcast_to(np.asarray(v, _F), (n,)) for v in (cy, cx, a, b, theta, value, hollow)
    )
    reach = np.maximum(a, b)
    seen = (cy > -reach) & (cy < cv.extent + reach) & (cx > -reach) & (cx < cv.extent + reach)
    half = np.ceil(reach * cv.px).astype(np.int64) + 1
    # Stamp nuclei of similar size together, each in a (N, k, k) block around its centre.
    for h in np.unique(half[seen]):
        idx = np.flatnonzero(seen & (half == h))
        off = np.arange(-h, h + 1)
        chunk = max(1, 2_000_000 // off.size**2)  # bounds memory at 1024 px
        for s in range(0, idx.size, chunk):
            i = idx[s : s + chunk]
            _stamp(out, cv, off, cy[i], cx[i], a[i], b[i], theta[i], value[i], hollow[i])
    return out.reshape(size, size)


def _stamp(out, cv: Canvas, off, cy, cx, a, b, theta, value, hollow) -> None:
    size = cv.size
    cyp, cxp = cy * cv.px, cx * cv.px
    iy = np.floor(cyp).astype(np.int64)[:, None, None] + off[None, :, None]  # (N, k, 1)
    ix = np.floor(cxp).astype(np.int64)[:, None, None] + off[None, None, :]  # (N, 1, k)
    dy = (iy + 0.5 - cyp[:, None, None]).astype(_F) / cv.px
    dx = (ix + 0.5 - cxp[:, None, None]).astype(_F) / cv.px
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    a, b = a[:, None, None], b[:, None, None]
    d = np.sqrt(((dx * c + dy * s) / a) ** 2 + ((dy * c - dx * s) / b) ** 2)  # (N, k, k), 1 on rim
    alpha = np.clip(0.5 + (1.0 - d) * np.sqrt(a * b) * cv.px, 0.0, 1.0)  # ~1 px soft edge
    shade = 1.0 - hollow[:, None, None] * (1.0 - np.minimum(d, 1.0) ** 2)
    conc = alpha * value[:, None, None] * shade
    iy, ix = np.broadcast_arrays(iy, ix)
    ok = (iy >= 0) & (iy < size) & (ix >= 0) & (ix < size) & (conc > 0.01)
    np.maximum.at(out, iy[ok] * size + ix[ok], conc[ok])


def nuclei(rng, cv, cy, cx, a, b, theta, value, hollow=0.0, shape_jitter=0.15) -> np.ndarray:
    """Ellipses with per-nucleus size jitter and a random orientation where ``theta`` is None."""
    n = len(cy)
    jit = rng.lognormal(0.0, shape_jitter, (2, n))
    theta = rng.uniform(0, np.pi, n) if theta is None else theta
    return ellipses(cv, cy, cx, a * jit[0], b * jit[1], theta, value, hollow)


def fibres(rng, cv, theta: float, wavelength: float, warp: float, sharp: float) -> np.ndarray:
    """Wavy parallel fibres (S, S) in [0, 1] running along angle ``theta``."""
    across = -cv.x * math.sin(theta) + cv.y * math.cos(theta)
    phase = 2 * np.pi * across / wavelength + warp * noise(rng, cv, wavelength * 1.5)
    return ((0.5 + 0.5 * np.sin(phase)) ** sharp).astype(_F)


def scattered_nuclei(rng, cv, per_1000, r, value, aspect=1.0, theta=None, hollow=0.0) -> np.ndarray:
    """Randomly scattered nuclei of radius ``r`` at a density per 1000 square units."""
    cy, cx = random_points(rng, cv, poisson_count(rng, cv, per_1000))
    return nuclei(rng, cv, cy, cx, r * aspect**0.5, r / aspect**0.5, theta, value, hollow)
