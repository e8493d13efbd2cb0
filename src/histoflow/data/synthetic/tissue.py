"""Tissue classes of the synthetic generator: how each one is drawn, and which border it.

Each class recipe returns two concentration maps (S, S): hematoxylin (nuclei) and eosin
(cytoplasm, fibres), from its morphology: fat cells' membranes, collagen streaks, packed
lymphocytes, crypts and glands, mucin pools, necrotic debris, smooth-muscle bundles. Some tiles
show a patch of a neighbouring tissue, as real tiles do, so that classes overlap and a
classifier cannot be perfect.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from histoflow.data.synthetic.canvas import (
    Canvas,
    ellipses,
    fibres,
    noise,
    nuclei,
    poisson_count,
    random_points,
    scattered_nuclei,
)

__all__ = ["CLASS_NAMES", "draw_tissue"]

_F = np.float32
_MIX_PROBABILITY = 0.2


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
    c_e = membrane * rng.uniform(0.45, 0.7) * (0.8 + 0.2 * noise(rng, cv, 2))
    # Flattened nuclei on a few membranes, at midpoints of neighbouring seeds.
    i, j = rng.integers(0, sy.size, (2, 12))
    near = np.hypot(sy[i] - sy[j], sx[i] - sx[j]) < 1.5 * spacing
    i, j, keep = i[near], j[near], rng.random(near.sum()) < 0.3
    my, mx = (sy[i] + sy[j]) / 2, (sx[i] + sx[j]) / 2
    ang = np.arctan2(sy[j] - sy[i], sx[j] - sx[i]) + np.pi / 2
    c_h = nuclei(rng, cv, my[keep], mx[keep], 2.8, 0.8, ang[keep], 1.0)
    c_h = np.maximum(c_h, scattered_nuclei(rng, cv, rng.uniform(0, 1.5), 1.6, 1.1))
    return c_h, c_e + 0.4 * c_h


def _stroma(rng, cv):
    # Collagen: streaky, wavy eosinophilic fibres with elongated clefts and sparse spindle cells.
    theta = rng.uniform(0, np.pi)
    streak = noise(rng, cv, rng.uniform(6, 12), rng.uniform(0.5, 0.9), theta)
    wavy = fibres(rng, cv, theta, rng.uniform(3, 6), rng.uniform(2, 4), rng.uniform(1, 2))
    fib = np.clip(0.5 + 0.4 * streak, 0, 1) * 0.7 + 0.3 * wavy
    gaps = noise(rng, cv, rng.uniform(6, 10), rng.uniform(1.5, 3), theta) > rng.uniform(1.0, 2.2)
    c_e = (rng.uniform(0.2, 0.35) + rng.uniform(0.3, 0.5) * fib) * (1 - 0.9 * gaps)
    cy, cx = random_points(rng, cv, poisson_count(rng, cv, rng.uniform(3, 9)))
    ang = theta + rng.normal(0, 0.25, len(cy))  # spindle cells follow the fibres
    c_h = nuclei(rng, cv, cy, cx, rng.uniform(2.2, 3.6), rng.uniform(0.6, 0.95), ang, 1.1)
    c_h = np.maximum(c_h, scattered_nuclei(rng, cv, rng.uniform(0, 4), 1.6, 1.4))
    return c_h, c_e


def _lymphocytes(rng, cv):
    # Small round dark nuclei, densely packed: candidates at the highest density are thinned
    # by a smooth density map (S, S), so packing varies across the tile.
    density = rng.uniform(35, 60) * np.clip(1 + 0.4 * noise(rng, cv, 10), 0.3, 2.0)
    cy, cx = random_points(rng, cv, poisson_count(rng, cv, 120))
    iy = np.clip((cy * cv.px).astype(int), 0, cv.size - 1)
    ix = np.clip((cx * cv.px).astype(int), 0, cv.size - 1)
    keep = rng.random(len(cy)) < density[iy, ix] / 120
    c_h = nuclei(rng, cv, cy[keep], cx[keep], 1.75, 1.65, None, rng.uniform(1.3, 1.7), 0.1)
    c_h = np.maximum(c_h, scattered_nuclei(rng, cv, rng.uniform(0, 3), 2.6, 0.8, 1.3, hollow=0.3))
    c_e = rng.uniform(0.15, 0.3) + 0.06 * noise(rng, cv, 1.5)
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
    c_e = np.where(epi, 0.32, 0.22 + 0.08 * noise(rng, cv, 2)) * ~lumen
    cy, cx, ang = _ring_nuclei(rng, cv, gl, 2.4, 0.8, 0.92)
    c_h = nuclei(rng, cv, cy, cx, 1.8, 0.95, ang, 1.15, 0.1)
    gy, gx, _ = _ring_nuclei(rng, cv, gl, 4.5, 0.55, 0.68)  # goblet cell vacuoles
    goblet = ellipses(cv, gy, gx, 1.7, 1.4, 0.0, 1.0)
    c_e = c_e * (1 - 0.85 * goblet)
    lp = scattered_nuclei(rng, cv, rng.uniform(8, 20), 1.7, 1.3) * ~epi
    return np.maximum(c_h, lp) + 0.12 * goblet, c_e


def _tumour(rng, cv):
    radius = rng.uniform(9, 16)
    gl = _place_glands(rng, cv, radius, radius * rng.uniform(1.7, 2.2), rng.uniform(0.1, 0.25))
    rho = _gland_rho(cv, gl)
    lumen, epi = rho < rng.uniform(0.0, 0.4), rho < 1.0
    streaks = noise(rng, cv, rng.uniform(6, 10), 0.7, rng.uniform(0, np.pi))
    desmo = 0.3 + 0.3 * np.clip(0.5 + 0.4 * streaks, 0, 1)  # desmoplastic stroma
    c_e = np.where(epi, 0.38 + 0.08 * noise(rng, cv, 1.5), desmo) * ~lumen
    # Stratified, crowded, pleomorphic, hyperchromatic or vesicular nuclei.
    cy, cx, ang = _ring_nuclei(rng, cv, gl, rng.uniform(1.5, 2.2), 0.45, 0.97)
    n = len(cy)
    size = rng.uniform(1.9, 2.6) * np.clip(rng.lognormal(0, 0.2, n), 0.6, 1.6)
    short, tilt = size * rng.uniform(0.55, 0.9, n), ang + rng.normal(0, 0.6, n)
    shade, hollow = rng.uniform(0.9, 1.45, n), rng.uniform(0, 0.6, n)
    c_h = nuclei(rng, cv, cy, cx, size, short, tilt, shade, hollow, 0.25)
    debris = scattered_nuclei(rng, cv, rng.uniform(0, 25), 0.7, 1.4, 1.5) * lumen
    return np.maximum(c_h, debris), c_e + 0.5 * debris


def _mucus(rng, cv):
    # Pale, lightly basophilic wisps of mucin with pools of empty space and a few floating cells.
    theta = rng.uniform(0, np.pi)
    streaks = noise(rng, cv, rng.uniform(5, 10), rng.uniform(1, 2.5), theta)
    wisps = np.clip(0.6 + 0.3 * streaks, 0, 1)
    pools = np.clip(0.6 + 0.7 * noise(rng, cv, rng.uniform(4, 8)) + rng.uniform(-0.3, 0.4), 0, 1)
    body = wisps * pools * (0.9 + 0.1 * noise(rng, cv, 0.6))
    c_h = body * rng.uniform(0.22, 0.38)
    c_e = body * rng.uniform(0.1, 0.22)
    cells = scattered_nuclei(rng, cv, rng.uniform(0, 2.5), 1.9, 1.0, 1.4, hollow=0.3)
    return np.maximum(c_h, cells), c_e + 0.3 * cells


def _necrosis(rng, cv):
    # Granular eosinophilic debris, nuclear dust (karyorrhexis) in clusters, pale ghost nuclei.
    grain = noise(rng, cv, 0.5)
    c_e = rng.uniform(0.3, 0.55) + 0.08 * grain + 0.1 * noise(rng, cv, 4)
    c_e = c_e * (1 - 0.9 * (noise(rng, cv, 3) > rng.uniform(1.2, 2.2)))
    n_cl = rng.integers(2, 7)
    ky, kx = random_points(rng, cv, n_cl)
    per = rng.poisson(rng.uniform(10, 30), n_cl)
    spread = rng.uniform(3, 8, n_cl)
    fy = np.repeat(ky, per) + rng.normal(0, 1, per.sum()) * np.repeat(spread, per)
    fx = np.repeat(kx, per) + rng.normal(0, 1, per.sum()) * np.repeat(spread, per)
    n = len(fy)
    a, b, shade = rng.uniform(0.4, 1.2, n), rng.uniform(0.3, 0.8, n), rng.uniform(0.8, 1.6, n)
    dust = nuclei(rng, cv, fy, fx, a, b, None, shade, 0.0, 0.3)
    ghosts = scattered_nuclei(
        rng, cv, rng.uniform(3, 10), 2.2, rng.uniform(0.25, 0.4), 1.3, hollow=0.5
    )
    c_h = np.maximum(dust, ghosts) + rng.uniform(0.04, 0.12) * (c_e > 0.1)
    return c_h, c_e


def _muscle(rng, cv):
    # Smooth muscle: dense eosinophilic bundles, thin clefts, cigar-shaped nuclei along the axis.
    theta = rng.uniform(0, np.pi)
    fib = fibres(rng, cv, theta, rng.uniform(2, 3.5), rng.uniform(0.3, 1.0), 1.0)
    cleft = fibres(rng, cv, theta, rng.uniform(10, 20), rng.uniform(0.5, 1.5), 12.0)
    c_e = (rng.uniform(0.5, 0.7) + 0.08 * fib + 0.05 * noise(rng, cv, 1)) * (1 - 0.8 * cleft)
    cy, cx = random_points(rng, cv, poisson_count(rng, cv, rng.uniform(5, 12)))
    ang = theta + rng.normal(0, 0.08, len(cy))
    c_h = nuclei(rng, cv, cy, cx, rng.uniform(3.0, 4.5), rng.uniform(0.65, 0.95), ang, 1.0, 0.15)
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


def draw_tissue(name: str, rng: np.random.Generator, cv: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """Concentration maps ``(c_h, c_e)``, each (S, S), of one tile of class ``name``.

    With probability 0.2 a smooth blob of a tissue that borders the class replaces part of
    the tile.
    """
    c_h, c_e = _RECIPES[name](rng, cv)
    if rng.random() < _MIX_PROBABILITY:
        c_h, c_e = _mix(rng, cv, c_h, c_e, _NEIGHBOURS[name])
    return c_h, c_e


def _mix(rng, cv: Canvas, c_h, c_e, neighbours: tuple[str, ...]):
    """Replace a smooth blob covering 20-45% of the tile by one of the neighbouring tissues."""
    o_h, o_e = _RECIPES[neighbours[rng.integers(len(neighbours))]](rng, cv)
    field = noise(rng, cv, rng.uniform(8, 14))
    cut = np.quantile(field, 1 - rng.uniform(0.2, 0.45))
    mask = np.clip((field - cut) / 0.3 + 0.5, 0, 1)  # (S, S), soft edge
    return c_h * (1 - mask) + o_h * mask, c_e * (1 - mask) + o_e * mask
