"""Stain normalisation: a stain-shifted batch comes back to the training stain; blanks pass."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from histoflow.data.images import load_rgb
from histoflow.data.stain_normalization import (
    StainNormalizer,
    create_stain_normalizer,
    fit_stain_target,
    fit_stain_target_on_files,
)
from histoflow.data.synthetic import generate
from histoflow.data.transforms import decode_transform
from histoflow.tiny import TINY_DATA


def _tiles(folder: Path) -> list[torch.Tensor]:
    paths = pd.read_csv(folder / "manifest.csv")["path"]
    prepare = decode_transform(TINY_DATA["size"])
    return [prepare(load_rgb(folder / p)).as_subclass(torch.Tensor) for p in paths]


@pytest.fixture(scope="module")
def shifted(tmp_path_factory) -> list[torch.Tensor]:
    """The tiny dataset's tiles, same morphology, rendered by a clearly different lab."""
    out = tmp_path_factory.mktemp("shifted") / "data"
    generate(out, **TINY_DATA, stain_shift=1.0)
    return _tiles(out)


def _stain_stats(tiles: list[torch.Tensor]) -> torch.Tensor:
    """Mean optical density per RGB channel over the stained tiles (3,)."""
    od = torch.stack([-torch.log((t.float() + 1) / 256).mean((1, 2)) for t in tiles])
    return od.mean(0)


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_normalising_a_shifted_batch_brings_its_stain_back(tiny_data, shifted, method):
    reference = _tiles(tiny_data)
    normalizer = StainNormalizer(fit_stain_target(method, reference))
    normalised = [normalizer(t) for t in shifted]
    before = float((_stain_stats(shifted) - _stain_stats(reference)).norm())
    after = float((_stain_stats(normalised) - _stain_stats(reference)).norm())
    assert after < 0.7 * before, f"{method}: stain distance {before:.3f} -> {after:.3f}"
    assert all(
        n.dtype == torch.uint8 and n.shape == t.shape
        for n, t in zip(normalised, shifted, strict=True)
    )
    # The fat tiles (almost no stain) pass through unchanged, and are counted.
    unchanged = sum(torch.equal(n, t) for n, t in zip(normalised, shifted, strict=True))
    assert 0 < normalizer.n_passed_through == unchanged < len(shifted)


def test_target_is_fitted_on_many_training_tiles_and_rebuilds_exactly(tiny_data):
    paths = pd.read_csv(tiny_data / "manifest.csv")["path"].tolist()
    target = fit_stain_target_on_files("macenko", tiny_data, paths, image_size=32, max_tiles=40)
    assert target["n_tiles"] + target["n_skipped"] == 40 and target["n_tiles"] > 10
    rebuilt = create_stain_normalizer(target)
    tile = _tiles(tiny_data)[20]
    assert torch.equal(rebuilt(tile), StainNormalizer(target)(tile))
    assert create_stain_normalizer({"method": "none"}) is None
    assert create_stain_normalizer(None) is None


def test_blank_tiles_pass_through_and_a_blank_training_set_is_refused():
    white = torch.full((3, 32, 32), 245, dtype=torch.uint8)
    with pytest.raises(ValueError, match="none of the 2 training tiles.*stain_normalization: none"):
        fit_stain_target("reinhard", [white, white])
    stained = torch.randint(60, 200, (3, 32, 32), generator=torch.Generator().manual_seed(0))
    normalizer = StainNormalizer(fit_stain_target("reinhard", [stained.to(torch.uint8)]))
    assert torch.equal(normalizer(white), white)
    assert normalizer.n_passed_through == 1
