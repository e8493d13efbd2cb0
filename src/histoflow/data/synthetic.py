"""Deterministic synthetic H&E-like histopathology tiles, for tests, demos and drift drills.

Each tile is drawn as two concentration maps, hematoxylin (nuclei) and eosin (cytoplasm,
fibres), from a per-class morphology recipe, then rendered by Beer-Lambert optical density
with the stain vectors of the patient's site: ``RGB = 255 * exp(-(cH * vH + cE * vE))``.
Geometry is defined in tissue units (a 20x tile is 64 units across whatever its pixel size);
at 40x the field of view halves, so nuclei look twice as large and four times fewer.

Every tile draws from its own generator seeded by ``(seed, class index, tile index)``, so the
same arguments give byte-identical files and a larger ``per_class`` keeps the earlier tiles.
"""

from __future__ import annotations

import csv
import functools
import math
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from histoflow.io import atomic_dir

__all__ = ["CLASS_NAMES", "generate"]

_F = np.float32
_SITES = ("site_a", "site_b", "site_c")
_SHIFT_SITE = "site_shift"
# Optical-density colour vectors (R, G, B) and intensities per site: mild lab-to-lab variation.
_STAINS = {
    "site_a": ((0.58, 0.76, 0.30), (0.10, 0.88, 0.42), 1.00, 1.00),
    "site_b": ((0.54, 0.79, 0.33), (0.14, 0.86, 0.46), 0.92, 1.08),
    "site_c": ((0.62, 0.73, 0.28), (0.08, 0.90, 0.38), 1.08, 0.93),
}
# Where stain_shift=1 moves the vectors: bluer hematoxylin, pinker eosin (both from site_a).
_SHIFT_H = (0.76, 0.62, 0.18)
_SHIFT_E = (0.00, 0.92, 0.18)
_PNG_COMPRESS = 6
_TQDM_MIN_TILES = 2000
_PARALLEL_MIN_TILES = 2000  # below this, starting worker processes costs more than it saves


@dataclass(frozen=True)
class _Canvas:
    """Pixel grid of one tile; ``y`` (S, 1) and ``x`` (1, S) are pixel centres in tissue units."""

    size: int
    px: float  # pixels per tissue unit
    y: np.ndarray
    x: np.ndarray

    @property
    def extent(self) -> float:
        return self.size / self.px


def _canvas(size: int, magnification: int) -> _Canvas:
    px = size / 64 * magnification
    c = ((np.arange(size) + 0.5) / px).astype(_F)
    return _Canvas(size, px, c[:, None], c[None, :])


def _noise(rng, cv: _Canvas, sigma: float, across: float | None = None, theta: float = 0.0):
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


def _points(rng: np.random.Generator, cv: _Canvas, n: int) -> tuple[np.ndarray, np.ndarray]:
    # A small margin so nuclei cut by the border appear as often as whole ones.
    lo, hi = -2.0, cv.extent + 2.0
    return rng.uniform(lo, hi, n), rng.uniform(lo, hi, n)


def _count(rng: np.random.Generator, cv: _Canvas, per_1000: float) -> int:
    """Poisson count for a density given per 1000 square tissue units."""
    return int(rng.poisson(max(per_1000, 0.0) * cv.extent**2 / 1000))


def _ellipses(cv: _Canvas, cy, cx, a, b, theta, value, hollow=0.0) -> np.ndarray:
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


def _stamp(out, cv: _Canvas, off, cy, cx, a, b, theta, value, hollow) -> None:
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


def _nuclei(rng, cv, cy, cx, a, b, theta, value, hollow=0.0, shape_jitter=0.15) -> np.ndarray:
    """Ellipses with per-nucleus size jitter and a random orientation where ``theta`` is None."""
    n = len(cy)
    jit = rng.lognormal(0.0, shape_jitter, (2, n))
    theta = rng.uniform(0, np.pi, n) if theta is None else theta
    return _ellipses(cv, cy, cx, a * jit[0], b * jit[1], theta, value, hollow)


def _fibres(rng, cv, theta: float, wavelength: float, warp: float, sharp: float) -> np.ndarray:
    """Wavy parallel fibres (S, S) in [0, 1] running along angle ``theta``."""
    across = -cv.x * math.sin(theta) + cv.y * math.cos(theta)
    phase = 2 * np.pi * across / wavelength + warp * _noise(rng, cv, wavelength * 1.5)
    return ((0.5 + 0.5 * np.sin(phase)) ** sharp).astype(_F)


def _spread(rng, cv, per_1000, r, value, aspect=1.0, theta=None, hollow=0.0) -> np.ndarray:
    """Randomly scattered nuclei of radius ``r`` at a density per 1000 square units."""
    cy, cx = _points(rng, cv, _count(rng, cv, per_1000))
    return _nuclei(rng, cv, cy, cx, r * aspect**0.5, r / aspect**0.5, theta, value, hollow)


# --- class recipes: each returns (cH, cE) concentration maps of shape (S, S) ---------------


def _adipose(rng, cv):
    # Voronoi cells: pixels near the bisector of their two nearest seeds form thin membranes.
    spacing = rng.uniform(15, 28)
    g = np.arange(-spacing, cv.extent + 2 * spacing, spacing)
    sy, sx = (v.ravel() + rng.uniform(-0.35, 0.35, v.size) * spacing for v in np.meshgrid(g, g))
    d1 = d2 = np.full((cv.size, cv.size), np.inf, _F)  # nearest and second-nearest seed
    for y, x in zip(sy, sx, strict=True):
        d = np.hypot(cv.y - _F(y), cv.x - _F(x))
        d1, d2 = np.minimum(d1, d), np.minimum(d2, np.maximum(d1, d))
    membrane = np.clip(1.0 - (d2 - d1) / rng.uniform(0.5, 1.0), 0, 1)
    c_e = membrane * rng.uniform(0.45, 0.7) * (0.8 + 0.2 * _noise(rng, cv, 2))
    # Flattened nuclei on a few membranes, at midpoints of neighbouring seeds.
    i, j = rng.integers(0, sy.size, (2, 12))
    near = np.hypot(sy[i] - sy[j], sx[i] - sx[j]) < 1.5 * spacing
    i, j, keep = i[near], j[near], rng.random(near.sum()) < 0.3
    my, mx = (sy[i] + sy[j]) / 2, (sx[i] + sx[j]) / 2
    ang = np.arctan2(sy[j] - sy[i], sx[j] - sx[i]) + np.pi / 2
    c_h = _nuclei(rng, cv, my[keep], mx[keep], 2.8, 0.8, ang[keep], 1.0)
    c_h = np.maximum(c_h, _spread(rng, cv, rng.uniform(0, 1.5), 1.6, 1.1))
    return c_h, c_e + 0.4 * c_h


def _stroma(rng, cv):
    # Collagen: streaky, wavy eosinophilic fibres with elongated clefts and sparse spindle cells.
    theta = rng.uniform(0, np.pi)
    streak = _noise(rng, cv, rng.uniform(6, 12), rng.uniform(0.5, 0.9), theta)
    wavy = _fibres(rng, cv, theta, rng.uniform(3, 6), rng.uniform(2, 4), rng.uniform(1, 2))
    fib = np.clip(0.5 + 0.4 * streak, 0, 1) * 0.7 + 0.3 * wavy
    gaps = _noise(rng, cv, rng.uniform(6, 10), rng.uniform(1.5, 3), theta) > rng.uniform(1.0, 2.2)
    c_e = (rng.uniform(0.2, 0.35) + rng.uniform(0.3, 0.5) * fib) * (1 - 0.9 * gaps)
    cy, cx = _points(rng, cv, _count(rng, cv, rng.uniform(3, 9)))
    ang = theta + rng.normal(0, 0.25, len(cy))  # spindle cells follow the fibres
    c_h = _nuclei(rng, cv, cy, cx, rng.uniform(2.2, 3.6), rng.uniform(0.6, 0.95), ang, 1.1)
    c_h = np.maximum(c_h, _spread(rng, cv, rng.uniform(0, 4), 1.6, 1.4))
    return c_h, c_e


def _lymphocytes(rng, cv):
    # Small round dark nuclei, densely packed: candidates at the highest density are thinned
    # by a smooth density map (S, S), so packing varies across the tile.
    density = rng.uniform(35, 60) * np.clip(1 + 0.4 * _noise(rng, cv, 10), 0.3, 2.0)
    cy, cx = _points(rng, cv, _count(rng, cv, 120))
    iy = np.clip((cy * cv.px).astype(int), 0, cv.size - 1)
    ix = np.clip((cx * cv.px).astype(int), 0, cv.size - 1)
    keep = rng.random(len(cy)) < density[iy, ix] / 120
    c_h = _nuclei(rng, cv, cy[keep], cx[keep], 1.75, 1.65, None, rng.uniform(1.3, 1.7), 0.1)
    c_h = np.maximum(c_h, _spread(rng, cv, rng.uniform(0, 3), 2.6, 0.8, 1.3, hollow=0.3))
    c_e = rng.uniform(0.15, 0.3) + 0.06 * _noise(rng, cv, 1.5)
    return c_h, c_e


@dataclass(frozen=True)
class _Glands:
    cy: np.ndarray  # (G,) centres, tissue units
    cx: np.ndarray
    radius: np.ndarray  # (G,) mean radius
    harm: np.ndarray  # (G, 3, 2) cos amplitude and phase of harmonics 2..4 of the outline

    def r_unit(self, g: int, z: np.ndarray) -> np.ndarray:
        """Outline radius at directions given as unit complex numbers ``z`` (cheaper than angles)."""
        wobble, zk = 0.0, z
        for amp, ph in self.harm[g]:
            zk = zk * z  # z**k for harmonics k = 2, 3, 4
            wobble = wobble + amp * (zk * complex(math.cos(ph), math.sin(ph))).real
        return self.radius[g] * (1 + wobble)


def _place_glands(rng, cv, radius, spacing, irregular) -> _Glands:
    g = np.arange(-spacing / 2, cv.extent + spacing, spacing)
    cy, cx = (v.ravel() for v in np.meshgrid(g, g))
    cx = cx + (np.round(cy / spacing) % 2) * spacing / 2  # hex-like packing
    cy, cx = (
        cy + rng.normal(0, 0.15 * spacing, cy.size),
        cx + rng.normal(0, 0.15 * spacing, cy.size),
    )
    n = cy.size
    harm = np.stack([rng.uniform(0, irregular, (n, 3)), rng.uniform(0, 2 * np.pi, (n, 3))], -1)
    radius = radius * rng.uniform(0.8, 1.2, n)
    reach = radius * (1 + harm[:, :, 0].sum(1))
    seen = (cy > -reach) & (cy < cv.extent + reach) & (cx > -reach) & (cx < cv.extent + reach)
    return _Glands(cy[seen], cx[seen], radius[seen], harm[seen])


def _gland_rho(cv, gl: _Glands) -> np.ndarray:
    """Normalised radius (S, S): < 1 inside the nearest gland's outline, 0 at its centre."""
    rho = np.full((cv.size, cv.size), np.inf, _F)
    for g in range(gl.cy.size):
        z = (cv.x - gl.cx[g]) + 1j * (cv.y - gl.cy[g])  # (S, S) offsets as complex numbers
        dist = np.abs(z) + 1e-6
        rho = np.minimum(rho, dist / gl.r_unit(g, z / dist))
    return rho


def _ring_nuclei(rng, cv, gl: _Glands, spacing, rho_lo, rho_hi):
    """Nucleus centres in each gland's epithelium and their radial angle (for orientation)."""
    ys, xs, angs = [], [], []
    for g in range(gl.cy.size):
        n = int(2 * np.pi * gl.radius[g] * rho_hi / spacing)
        phi = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 2 * np.pi)
        phi = phi + rng.normal(0, 0.25 * spacing / gl.radius[g], n)
        r = gl.r_unit(g, np.exp(1j * phi)) * rng.uniform(rho_lo, rho_hi, n)
        ys.append(gl.cy[g] + r * np.sin(phi))
        xs.append(gl.cx[g] + r * np.cos(phi))
        angs.append(phi)
    return np.concatenate(ys), np.concatenate(xs), np.concatenate(angs)


def _normal_mucosa(rng, cv):
    radius = rng.uniform(9, 13)
    gl = _place_glands(rng, cv, radius, radius * rng.uniform(2.3, 2.9), 0.06)
    rho = _gland_rho(cv, gl)
    lumen, epi = rho < rng.uniform(0.3, 0.45), (rho < 1.0)
    # Lamina propria between crypts: loose pale stroma with scattered plasma cells/lymphocytes.
    c_e = np.where(epi, 0.32, 0.22 + 0.08 * _noise(rng, cv, 2)) * ~lumen
    cy, cx, ang = _ring_nuclei(rng, cv, gl, 2.4, 0.8, 0.92)
    c_h = _nuclei(rng, cv, cy, cx, 1.8, 0.95, ang, 1.15, 0.1)
    gy, gx, _ = _ring_nuclei(rng, cv, gl, 4.5, 0.55, 0.68)  # goblet cell vacuoles
    goblet = _ellipses(cv, gy, gx, 1.7, 1.4, 0.0, 1.0)
    c_e = c_e * (1 - 0.85 * goblet)
    lp = _spread(rng, cv, rng.uniform(8, 20), 1.7, 1.3) * ~epi
    return np.maximum(c_h, lp) + 0.12 * goblet, c_e


def _tumour(rng, cv):
    radius = rng.uniform(9, 16)
    gl = _place_glands(rng, cv, radius, radius * rng.uniform(1.7, 2.2), rng.uniform(0.1, 0.25))
    rho = _gland_rho(cv, gl)
    lumen, epi = rho < rng.uniform(0.0, 0.4), rho < 1.0
    streaks = _noise(rng, cv, rng.uniform(6, 10), 0.7, rng.uniform(0, np.pi))
    desmo = 0.3 + 0.3 * np.clip(0.5 + 0.4 * streaks, 0, 1)  # desmoplastic stroma
    c_e = np.where(epi, 0.38 + 0.08 * _noise(rng, cv, 1.5), desmo) * ~lumen
    # Stratified, crowded, pleomorphic, hyperchromatic or vesicular nuclei.
    cy, cx, ang = _ring_nuclei(rng, cv, gl, rng.uniform(1.5, 2.2), 0.45, 0.97)
    n = len(cy)
    size = rng.uniform(1.9, 2.6) * np.clip(rng.lognormal(0, 0.2, n), 0.6, 1.6)
    short, tilt = size * rng.uniform(0.55, 0.9, n), ang + rng.normal(0, 0.6, n)
    shade, hollow = rng.uniform(0.9, 1.45, n), rng.uniform(0, 0.6, n)
    c_h = _nuclei(rng, cv, cy, cx, size, short, tilt, shade, hollow, 0.25)
    debris = _spread(rng, cv, rng.uniform(0, 25), 0.7, 1.4, 1.5) * lumen
    return np.maximum(c_h, debris), c_e + 0.5 * debris


def _mucus(rng, cv):
    # Pale, lightly basophilic wisps of mucin with pools of empty space and a few floating cells.
    theta = rng.uniform(0, np.pi)
    streaks = _noise(rng, cv, rng.uniform(5, 10), rng.uniform(1, 2.5), theta)
    wisps = np.clip(0.6 + 0.3 * streaks, 0, 1)
    pools = np.clip(0.6 + 0.7 * _noise(rng, cv, rng.uniform(4, 8)) + rng.uniform(-0.3, 0.4), 0, 1)
    body = wisps * pools * (0.9 + 0.1 * _noise(rng, cv, 0.6))
    c_h = body * rng.uniform(0.22, 0.38)
    c_e = body * rng.uniform(0.1, 0.22)
    cells = _spread(rng, cv, rng.uniform(0, 2.5), 1.9, 1.0, 1.4, hollow=0.3)
    return np.maximum(c_h, cells), c_e + 0.3 * cells


def _necrosis(rng, cv):
    # Granular eosinophilic debris, nuclear dust (karyorrhexis) in clusters, pale ghost nuclei.
    grain = _noise(rng, cv, 0.5)
    c_e = rng.uniform(0.3, 0.55) + 0.08 * grain + 0.1 * _noise(rng, cv, 4)
    c_e = c_e * (1 - 0.9 * (_noise(rng, cv, 3) > rng.uniform(1.2, 2.2)))
    n_cl = rng.integers(2, 7)
    ky, kx = _points(rng, cv, n_cl)
    per = rng.poisson(rng.uniform(10, 30), n_cl)
    spread = rng.uniform(3, 8, n_cl)
    fy = np.repeat(ky, per) + rng.normal(0, 1, per.sum()) * np.repeat(spread, per)
    fx = np.repeat(kx, per) + rng.normal(0, 1, per.sum()) * np.repeat(spread, per)
    n = len(fy)
    a, b, shade = rng.uniform(0.4, 1.2, n), rng.uniform(0.3, 0.8, n), rng.uniform(0.8, 1.6, n)
    dust = _nuclei(rng, cv, fy, fx, a, b, None, shade, 0.0, 0.3)
    ghosts = _spread(rng, cv, rng.uniform(3, 10), 2.2, rng.uniform(0.25, 0.4), 1.3, hollow=0.5)
    c_h = np.maximum(dust, ghosts) + rng.uniform(0.04, 0.12) * (c_e > 0.1)
    return c_h, c_e


def _muscle(rng, cv):
    # Smooth muscle: dense eosinophilic bundles, thin clefts, cigar-shaped nuclei along the axis.
    theta = rng.uniform(0, np.pi)
    fib = _fibres(rng, cv, theta, rng.uniform(2, 3.5), rng.uniform(0.3, 1.0), 1.0)
    cleft = _fibres(rng, cv, theta, rng.uniform(10, 20), rng.uniform(0.5, 1.5), 12.0)
    c_e = (rng.uniform(0.5, 0.7) + 0.08 * fib + 0.05 * _noise(rng, cv, 1)) * (1 - 0.8 * cleft)
    cy, cx = _points(rng, cv, _count(rng, cv, rng.uniform(5, 12)))
    ang = theta + rng.normal(0, 0.08, len(cy))
    c_h = _nuclei(rng, cv, cy, cx, rng.uniform(3.0, 4.5), rng.uniform(0.65, 0.95), ang, 1.0, 0.15)
    return c_h, c_e


_RECIPES: dict[str, Callable] = {
    "adipose": _adipose,
    "stroma": _stroma,
    "lymphocytes": _lymphocytes,
    "normal_mucosa": _normal_mucosa,
    "tumour": _tumour,
    "mucus": _mucus,
    "necrosis": _necrosis,
    "muscle": _muscle,
}
CLASS_NAMES: tuple[str, ...] = tuple(_RECIPES)
# Tissue that borders each class; some tiles show a patch of it, as real tiles do, so that
# classes overlap and a classifier cannot be perfect.
_NEIGHBOURS = {
    "adipose": ("stroma",),
    "stroma": ("muscle", "lymphocytes", "adipose"),
    "lymphocytes": ("stroma", "normal_mucosa"),
    "normal_mucosa": ("lymphocytes", "stroma"),
    "tumour": ("stroma", "necrosis"),
    "mucus": ("normal_mucosa", "tumour"),
    "necrosis": ("tumour",),
    "muscle": ("stroma",),
}
_MIX_PROBABILITY = 0.2


# --- stain and rendering -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Stain:
    v_h: np.ndarray  # (3,) unit optical-density vector, R G B
    v_e: np.ndarray
    i_h: float
    i_e: float


def _unit(v) -> np.ndarray:
    v = np.clip(np.asarray(v, np.float64), 0.0, None)
    return v / np.linalg.norm(v)


def _site_stain(site: str, shift: float) -> _Stain:
    """The site's stain, or for ``shift`` > 0 site_a's moved towards a clearly different lab."""
    v_h, v_e, i_h, i_e = _STAINS[site if shift == 0 else _SITES[0]]
    return _Stain(
        _unit(np.add(v_h, shift * np.subtract(_SHIFT_H, v_h))),
        _unit(np.add(v_e, shift * np.subtract(_SHIFT_E, v_e))),
        i_h * (1 + 0.5 * shift),  # stronger hematoxylin
        i_e / (1 + 0.5 * shift),  # paler eosin
    )


def _jitter(stain: _Stain, rng: np.random.Generator, sd: float) -> _Stain:
    j_h, j_e = rng.lognormal(0.0, sd, 2)
    return _Stain(stain.v_h, stain.v_e, stain.i_h * j_h, stain.i_e * j_e)


def _render(rng, cv: _Canvas, c_h, c_e, stain: _Stain) -> np.ndarray:
    """Beer-Lambert rendering of concentration maps (S, S) to RGB uint8 (S, S, 3)."""
    c_h = np.clip(c_h, 0, None) * (1 + 0.12 * _noise(rng, cv, 0.4))  # chromatin texture
    c_h = ndimage.gaussian_filter(c_h, 0.5)  # optical blur, in pixels
    c_e = ndimage.gaussian_filter(np.clip(c_e, 0, None), 0.5)
    od = (
        c_h[..., None] * (stain.i_h * stain.v_h) + c_e[..., None] * (stain.i_e * stain.v_e)
    ).astype(_F)
    rgb = 255 * np.exp(-(od + 0.04)) + rng.normal(0, 2.0, od.shape).astype(_F)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _mix(rng, cv: _Canvas, c_h, c_e, neighbours: tuple[str, ...]):
    """Replace a smooth blob covering 20-45% of the tile by one of the neighbouring tissues."""
    o_h, o_e = _RECIPES[neighbours[rng.integers(len(neighbours))]](rng, cv)
    field = _noise(rng, cv, rng.uniform(8, 14))
    cut = np.quantile(field, 1 - rng.uniform(0.2, 0.45))
    mask = np.clip((field - cut) / 0.3 + 0.5, 0, 1)  # (S, S), soft edge
    return c_h * (1 - mask) + o_h * mask, c_e * (1 - mask) + o_e * mask


def _tile(name: str, rng: np.random.Generator, size: int, stain: _Stain) -> tuple[np.ndarray, str]:
    magnification = 40 if rng.random() < 0.5 else 20
    cv = _canvas(size, magnification // 20)
    c_h, c_e = _RECIPES[name](rng, cv)
    if rng.random() < _MIX_PROBABILITY:
        c_h, c_e = _mix(rng, cv, c_h, c_e, _NEIGHBOURS[name])
    return _render(rng, cv, c_h, c_e, _jitter(stain, rng, 0.03)), f"{magnification}x"


# --- dataset ---------------------------------------------------------------------------------


def _check(name: str, value, lo, hi=None, *, integer: bool = True, hint: str = "") -> None:
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < lo or (hi is not None and value > hi):
        allowed = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} {allowed}{hint}, got {value!r}")


def _patients(classes: int, per_class: int, seed: int, shift: float) -> list[tuple[str, _Stain]]:
    """Site and stain of each patient, indexed by ``class * per_class + patient``."""
    table = []
    for p in range(classes * per_class):
        site = _SITES[p % len(_SITES)]  # round-robin, so every class is seen at every site
        stain = _site_stain(site, shift)
        # Slide-to-slide intensity variation, from a generator apart from the tiles'.
        stain = _jitter(stain, np.random.default_rng([seed, 0, p]), 0.06)
        table.append((_SHIFT_SITE if shift > 0 else site, stain))
    return table


def _write_tile(folder, names, patients, patients_per_class, seed, size, job) -> tuple:
    """Draw tile ``job`` = (class index, tile index) into ``folder``; its manifest row."""
    c, t = job
    patient = c * patients_per_class + t % patients_per_class
    rng = np.random.default_rng([seed, 1, c, t])
    site, stain = patients[patient]
    rgb, magnification = _tile(names[c], rng, size, stain)
    rel = f"{names[c]}/{names[c]}_{t:05d}.png"
    Image.fromarray(rgb, "RGB").save(folder / rel, format="PNG", compress_level=_PNG_COMPRESS)
    return (rel, names[c], f"P{patient:03d}", site, magnification)


def generate(
    out: str | Path,
    *,
    classes: int = 6,
    per_class: int = 80,
    size: int = 64,
    seed: int = 0,
    stain_shift: float = 0.0,
    patients_per_class: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic H&E tile dataset and its manifest.

    Writes ``<out>/<class>/<class>_<NNNNN>.png`` and ``<out>/manifest.csv`` (columns
    ``path,label,patient_id,site,magnification``, sorted by path). Tiles are assigned to
    patients round-robin within a class; patients to sites round-robin. The folder is built
    beside ``out`` and swapped in at the end, so an interrupted run leaves nothing half-written.

    Args:
        out: Output folder; must be missing or empty unless ``overwrite``.
        classes: Number of tissue classes, the first ``classes`` of ``CLASS_NAMES``.
        per_class: Tiles per class.
        size: Tile side in pixels (the field of view is the same at every size).
        seed: Non-negative seed; the same arguments give byte-identical files.
        stain_shift: 0 for the usual sites; F > 0 renders every tile with a stain moved by F
            (1 is a clearly different lab: stronger, bluer hematoxylin, paler, pinker eosin)
            and labels the site ``site_shift``. Morphology does not change.
        patients_per_class: Patients per class, at most ``per_class``; default
            ``min(8, per_class)``.
        overwrite: Replace a non-empty ``out``.

    Returns:
        Path of the manifest.

    Raises:
        ValueError: An argument is out of range (the message names it).
        FileExistsError: ``out`` is a file, or a non-empty folder and ``overwrite`` is False.
    """
    _check("classes", classes, 2, len(CLASS_NAMES))
    _check("per_class", per_class, 1)
    _check("size", size, 16, 1024)
    _check("seed", seed, 0)
    _check("stain_shift", stain_shift, 0.0, integer=False)
    if patients_per_class is None:
        patients_per_class = min(8, per_class)
    _check("patients_per_class", patients_per_class, 1, per_class, hint=" (per_class)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose another output path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; remove it or pass overwrite=True to replace it")

    names = CLASS_NAMES[:classes]
    patients = _patients(classes, patients_per_class, seed, float(stain_shift))
    jobs = [(c, t) for c in range(classes) for t in range(per_class)]
    with atomic_dir(out) as tmp:
        for name in names:
            (tmp / name).mkdir()
        draw = functools.partial(_write_tile, tmp, names, patients, patients_per_class, seed, size)
        bar = {
            "desc": "synthetic tiles",
            "total": len(jobs),
            "disable": len(jobs) <= _TQDM_MIN_TILES,
        }
        if len(jobs) < _PARALLEL_MIN_TILES or (os.cpu_count() or 1) < 2:
            rows = [draw(job) for job in tqdm(jobs, **bar)]
        else:  # tiles are independent and seeded by their index: the same bytes either way
            ctx = multiprocessing.get_context("forkserver")
            with ProcessPoolExecutor(min(os.cpu_count(), 8), mp_context=ctx) as pool:
                rows = list(tqdm(pool.map(draw, jobs, chunksize=64), **bar))
        rows.sort()
        with open(tmp / "manifest.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(("path", "label", "patient_id", "site", "magnification"))
            writer.writerows(rows)
    return out / "manifest.csv"
