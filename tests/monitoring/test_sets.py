"""Conformal sets as a monitoring signal on a stain-shifted batch.

Measured on the tiny project's model: a stain shift makes it confidently wrong, so its sets
do not widen (mean size 1.35 -> 1.12), but their coverage on labelled tiles falls below the
promise (0.92 -> 0.70 at 1 - alpha = 0.8): the labelled-coverage signal is what catches it.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histoflow.data.synthetic import generate
from histoflow.inference import Predictor
from histoflow.models.calibration import fit_conformal
from histoflow.monitoring.sets import prediction_set_signal
from histoflow.tiny import TINY_DATA


def _predict(predictor, folder):
    files = sorted(Path(folder).rglob("*.png"))
    table, _ = predictor.predict_files(files)
    table["truth"] = [f.parent.name for f in files]
    return table


def test_stain_shifted_batch_breaks_the_sets_promise_and_monitoring_sees_it(
    reproduced_project, tmp_path
):
    out = reproduced_project / "outputs"
    predictor = Predictor.from_folders(
        out / "train_encoder/model", out / "train_fusion/model", accelerator="cpu"
    )
    classes = predictor.classes

    def batch(name, **kwargs):
        generate(
            tmp_path / name, **{**TINY_DATA, "per_class": 20, "patients_per_class": 5, **kwargs}
        )
        return _predict(predictor, tmp_path / name)

    # The tiny project's own calibration split is a handful of tiles; calibrate on 60 fresh
    # in-distribution tiles (the model's own temperature kept) so the sets are informative.
    cal = batch("calibration", seed=21)
    probs = cal[[f"prob_{c}" for c in classes]].to_numpy()
    scores, labels = fit_conformal(probs, np.array([classes.index(t) for t in cal["truth"]]), 0.2)
    predictor.calibration = replace(predictor.calibration, alpha=0.2, scores=scores, labels=labels)
    same = batch("same_lab", seed=22)
    shifted = batch("other_lab", seed=22, stain_shift=1.0)
    reference = pd.DataFrame({"set_size": same["set_size"]})
    in_dist = prediction_set_signal(reference, same, same["truth"], classes)
    moved = prediction_set_signal(reference, shifted, shifted["truth"], classes)
    # In distribution the sets keep their 1 - alpha = 0.8 promise (60 labelled tiles)...
    assert in_dist["coverage"] >= 0.8 and in_dist["n_labelled"] == 60, in_dist
    assert in_dist["ratio"] == pytest.approx(1.0)
    # ...on the shifted stain they break it, and the batch's coverage says so.
    assert moved["coverage"] < 0.8 and moved["coverage"] < in_dist["coverage"] - 0.1, moved
    # The set size is reported against the reference's either way (here it shrinks: the
    # model is confidently wrong; a model that grows unsure would widen its sets instead).
    assert moved["ratio"] == pytest.approx(moved["mean_set_size"] / in_dist["mean_set_size"])
