import numpy as np
import pytest

from histoflow.evaluation.leakage import leakage_index


def _tiles(slide_scale: float, seed: int = 0):
    """240 tiles of 24 slides (one class each); ``slide_scale`` sets how much a slide shows."""
    rng = np.random.default_rng(seed)
    slide = np.repeat(np.arange(24), 10)
    y = slide % 3
    x = 0.6 * rng.normal(size=(3, 64))[y] + slide_scale * rng.normal(size=(24, 64))[slide]
    return x + rng.normal(0, 1.0, x.shape), y, slide


def test_slide_signature_makes_random_cv_optimistic_and_the_index_says_so():
    x, y, slide = _tiles(slide_scale=1.5)
    index = leakage_index(x, y, slide, threshold=0.1)
    assert all(index.random[p] > index.grouped[p] for p in index.random)
    assert index.likely_leakage and index.gap > 0.1
    assert "likely leakage" in index.sentence()


def test_no_slide_signature_no_leakage():
    x, y, slide = _tiles(slide_scale=0.0)
    index = leakage_index(x, y, slide, threshold=0.1)
    assert not index.likely_leakage, index.sentence()


def test_fewer_cases_than_folds_is_an_error():
    x, y, _ = _tiles(slide_scale=1.0)
    with pytest.raises(ValueError, match="lower the number of folds"):
        leakage_index(x, y, np.arange(len(y)) % 3, folds=5)


def test_a_large_set_is_scored_on_whole_cases_drawn_up_to_max_rows():
    x, y, slide = _tiles(slide_scale=1.5)
    index = leakage_index(x, y, slide, threshold=0.1, max_rows=100)
    # 10 tiles a slide: whole slides until 100 tiles, never a slide cut in two.
    assert index.rows == 100 and index.groups == 10
    assert index.likely_leakage, index.sentence()  # the slide signature still shows
    assert "100 tiles" in index.sentence()
    assert index == leakage_index(x, y, slide, threshold=0.1, max_rows=100)  # seeded
    assert leakage_index(x, y, slide, max_rows=1000).rows == len(y)  # under the cap: all
