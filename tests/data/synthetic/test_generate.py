"""Tests for the synthetic H&E tile generator, on tiny datasets (32 px, 6 tiles per class)."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histoflow.data import synthetic
from histoflow.data.synthetic import CLASS_NAMES, generate

TINY = {"classes": 8, "per_class": 6, "size": 32, "patients_per_class": 3}
COLUMNS = ["path", "label", "patient_id", "site", "magnification"]


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _pixels(root: Path) -> np.ndarray:
    """All tiles in manifest order as float RGB, (N, S, S, 3)."""
    return np.stack([np.asarray(Image.open(root / r["path"])) for r in _rows(root)]).astype(float)


def _optical_density(rgb: np.ndarray) -> np.ndarray:
    return -np.log((rgb + 1.0) / 256.0)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "base", seed=0, **TINY).parent


@pytest.fixture(scope="module")
def shifted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "shifted"
    return generate(out, seed=0, stain_shift=1.0, **TINY).parent


def test_same_arguments_give_identical_bytes(base, tmp_path):
    again = generate(tmp_path / "again", seed=0, **TINY).parent
    expected = _hashes(base)
    # Tiles, the manifest and the marker that lets --overwrite replace the folder.
    assert len(expected) == TINY["classes"] * TINY["per_class"] + 2
    assert _hashes(again) == expected


def test_worker_processes_give_the_same_bytes(base, tmp_path, monkeypatch):
    # Large datasets are drawn by a process pool; each tile is seeded by its index, so the
    # files and the manifest are byte for byte those of the serial run.
    monkeypatch.setattr(synthetic, "_PARALLEL_MIN_TILES", 0)
    pooled = generate(tmp_path / "pooled", seed=0, **TINY).parent
    assert _hashes(pooled) == _hashes(base)


def test_different_seed_gives_different_tiles(base, tmp_path):
    other = _hashes(generate(tmp_path / "other", seed=1, **TINY).parent)
    tiles = [p for p in _hashes(base) if p.endswith(".png")]
    assert sum(_hashes(base)[p] == other[p] for p in tiles) == 0


def test_more_tiles_per_class_keep_the_earlier_ones(base, tmp_path):
    more = _hashes(generate(tmp_path / "more", seed=0, **{**TINY, "per_class": 9}).parent)
    for path, digest in _hashes(base).items():
        if path.endswith(".png"):
            assert more[path] == digest, path


def test_manifest_lists_every_tile_with_patient_site_and_magnification(base):
    text = (base / "manifest.csv").read_text()
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert text.splitlines()[0] == ",".join(COLUMNS)
    rows = _rows(base)
    assert len(rows) == TINY["classes"] * TINY["per_class"]
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    for r in rows:
        assert re.fullmatch(rf"{r['label']}/{r['label']}_\d{{5}}\.png", r["path"]), r["path"]
        assert (base / r["path"]).is_file()
    assert {r["label"] for r in rows} == set(CLASS_NAMES[: TINY["classes"]])
    assert {r["site"] for r in rows} == {"site_a", "site_b", "site_c"}
    assert {r["magnification"] for r in rows} == {"20x", "40x"}
    by_patient: dict[str, set[tuple[str, str]]] = {}
    for r in rows:
        by_patient.setdefault(r["patient_id"], set()).add((r["label"], r["site"]))
    assert len(by_patient) == TINY["classes"] * TINY["patients_per_class"]
    assert all(len(v) == 1 for v in by_patient.values()), "a patient has one label and one site"


def test_stain_shift_changes_colour_but_not_morphology(base, shifted, tmp_path):
    rows, moved = _rows(base), _rows(shifted)
    assert {r["site"] for r in moved} == {"site_shift"}
    same = ("path", "label", "patient_id", "magnification")
    assert [[r[k] for k in same] for r in moved] == [[r[k] for k in same] for r in rows]

    od_base = _optical_density(_pixels(base)).mean(axis=(0, 1, 2))  # (3,) mean OD per channel
    od_shift = _optical_density(_pixels(shifted)).mean(axis=(0, 1, 2))
    # Measured about 0.13 at F=1 (and 0.06 at F=0.5); mild site-to-site variation is below 0.04.
    assert np.linalg.norm(od_shift - od_base) > 0.08
    # Bluer hematoxylin, pinker eosin: more red absorbed, less blue (measured +0.08 / -0.09).
    assert od_shift[0] - od_base[0] > 0.04
    assert od_base[2] - od_shift[2] > 0.05

    half = generate(tmp_path / "half", seed=0, stain_shift=0.5, **TINY).parent
    od_half = _optical_density(_pixels(half)).mean(axis=(0, 1, 2))
    assert 0.2 < np.linalg.norm(od_half - od_base) / np.linalg.norm(od_shift - od_base) < 0.8


def test_classes_differ_in_morphology(base):
    labels = np.array([r["label"] for r in _rows(base)])
    rgb = _pixels(base)
    white = {c: (rgb[labels == c].min(-1) > 215).mean() for c in CLASS_NAMES}  # empty space
    od = {c: _optical_density(rgb[labels == c]).mean() for c in CLASS_NAMES}  # overall stain
    pink = {c: (rgb[labels == c][..., 0] - rgb[labels == c][..., 2]).mean() for c in CLASS_NAMES}
    # Measured: adipose ~0.85 white, mucus ~0.5, cellular classes <= 0.12.
    assert white["adipose"] > 0.6 and white["mucus"] > 0.25
    assert max(white[c] for c in ("lymphocytes", "tumour", "muscle", "necrosis")) < 0.2
    # Crowded dark nuclei stain most (tumour ~0.53 mean OD, adipose ~0.07).
    assert od["tumour"] > od["stroma"] + 0.1
    assert od["stroma"] > od["adipose"] + 0.1
    assert od["lymphocytes"] > od["mucus"] + 0.1
    # Eosinophilic muscle and stroma are pinker (red above blue) than lymphocytes (~0).
    assert min(pink["muscle"], pink["stroma"]) > pink["lymphocytes"] + 10


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"classes": 1}, "classes"),
        ({"classes": len(CLASS_NAMES) + 1}, "classes"),
        ({"size": 8}, "size"),
        ({"size": 2048}, "size"),
        ({"per_class": 0}, "per_class"),
        ({"stain_shift": -0.5}, "stain_shift"),
        ({"patients_per_class": 0}, "patients_per_class"),
        ({"per_class": 4, "patients_per_class": 5}, "patients_per_class"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} must be .*(between|>=)"):
        generate(tmp_path / "out", **{**TINY, **kwargs})
    assert not (tmp_path / "out").exists()


def test_non_empty_output_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    kwargs = {**TINY, "classes": 2}
    generate(out, **{**kwargs, "per_class": 4, "patients_per_class": 2})
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate(out, **kwargs)
    generate(out, overwrite=True, **kwargs)
    assert len(_rows(out)) == 2 * TINY["per_class"]


def test_interrupted_run_leaves_nothing_behind(tmp_path, monkeypatch):
    real, calls = synthetic._tile, []

    def failing_tile(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_tile", failing_tile)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "out", **TINY)
    assert list(tmp_path.iterdir()) == []
