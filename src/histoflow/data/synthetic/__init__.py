"""Deterministic synthetic H&E-like histopathology tiles, for tests, demos and drift drills.

Each tile is drawn as two concentration maps, hematoxylin (nuclei) and eosin (cytoplasm,
fibres), from a per-class morphology recipe (:mod:`~histoflow.data.synthetic.tissue`, built on
the primitives of :mod:`~histoflow.data.synthetic.canvas`), then rendered by Beer-Lambert
optical density with the stain vectors of the patient's site
(:mod:`~histoflow.data.synthetic.stain`): ``RGB = 255 * exp(-(cH * vH + cE * vE))``.
Geometry is defined in tissue units (a 20x tile is 64 units across whatever its pixel size);
at 40x the field of view halves, so nuclei look twice as large and four times fewer.
:mod:`~histoflow.data.synthetic.standins` reshapes these tiles into each recipe's dataset.

Every tile draws from its own generator seeded by ``(seed, class index, tile index)``, so the
same arguments give byte-identical files and a larger ``per_class`` keeps the earlier tiles.
"""

from __future__ import annotations

import csv
import functools
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from histoflow.data.outdir import check_output, dataset_dir
from histoflow.data.synthetic.canvas import canvas
from histoflow.data.synthetic.stain import SHIFT_SITE, SITES, Stain, jitter, render, site_stain
from histoflow.data.synthetic.tissue import CLASS_NAMES, draw_tissue

__all__ = ["CLASS_NAMES", "generate"]

_PNG_COMPRESS = 6
_TQDM_MIN_TILES = 2000
_PARALLEL_MIN_TILES = 2000  # below this, starting worker processes costs more than it saves


def _tile(name: str, rng: np.random.Generator, size: int, stain: Stain) -> tuple[np.ndarray, str]:
    magnification = 40 if rng.random() < 0.5 else 20
    cv = canvas(size, magnification // 20)
    c_h, c_e = draw_tissue(name, rng, cv)
    return render(rng, cv, c_h, c_e, jitter(stain, rng, 0.03)), f"{magnification}x"


def _check(name: str, value, lo, hi=None, *, integer: bool = True, hint: str = "") -> None:
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < lo or (hi is not None and value > hi):
        allowed = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} {allowed}{hint}, got {value!r}")


def _patients(classes: int, per_class: int, seed: int, shift: float) -> list[tuple[str, Stain]]:
    """Site and stain of each patient, indexed by ``class * per_class + patient``."""
    table = []
    for p in range(classes * per_class):
        site = SITES[p % len(SITES)]  # round-robin, so every class is seen at every site
        stain = site_stain(site, shift)
        # Slide-to-slide intensity variation, from a generator apart from the tiles'.
        stain = jitter(stain, np.random.default_rng([seed, 0, p]), 0.06)
        table.append((SHIFT_SITE if shift > 0 else site, stain))
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
    beside ``out`` and swapped in at the end, so an interrupted run leaves nothing half-written;
    it is marked as histoflow's (:mod:`histoflow.data.outdir`), so that a later ``overwrite``
    may replace it.

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
        overwrite: Replace a non-empty ``out`` that histoflow wrote and that holds nothing
            else (see :func:`~histoflow.data.outdir.check_output`).

    Returns:
        Path of the manifest.

    Raises:
        ValueError: An argument is out of range (the message names it), or ``out`` is the
            current folder, one above it, or a project.
        FileExistsError: ``out`` is a file, or a non-empty folder and ``overwrite`` is False
            or histoflow did not write all of it.
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
    check_output(out, overwrite=overwrite)

    names = CLASS_NAMES[:classes]
    patients = _patients(classes, patients_per_class, seed, float(stain_shift))
    jobs = [(c, t) for c in range(classes) for t in range(per_class)]
    with dataset_dir(out, by="histoflow data synth") as tmp:
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
