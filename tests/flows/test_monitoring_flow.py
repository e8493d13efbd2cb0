"""The monitoring flow: Evidently drift reports for new batches against the training data."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_DATA, load_flow_module
from histoflow.data.synthetic import generate


def _batch(tmp_path, name, **kwargs):
    args = {**TINY_DATA, "per_class": 12, "patients_per_class": 4, **kwargs}
    generate(tmp_path / name, **args)
    return tmp_path / name


def test_in_distribution_batch_shows_no_drift(tmp_path, trained_project):
    batch = _batch(tmp_path, "same_lab", seed=7)
    summary = load_flow_module("monitoring").monitoring(str(batch), root=str(trained_project))
    report = trained_project / "monitoring/reports/same_lab"
    assert json.loads((report / "drift.json").read_text())["drift_detected"] is False
    assert summary["drift_detected"] is False
    assert (report / "drift.html").stat().st_size > 10_000
    assert len((report / "predictions.csv").read_text().splitlines()) == 1 + 36


def test_stain_shifted_batch_drifts_in_colour_features(tmp_path, trained_project):
    batch = _batch(tmp_path, "other_lab", seed=8, stain_shift=1.0)
    summary = load_flow_module("monitoring").monitoring(str(batch), root=str(trained_project))
    assert summary["drift_detected"] is True
    drifted = {c for c, v in summary["columns"].items() if v["drifted"]}
    assert {"od_hematoxylin", "mean_b"} & drifted, drifted


def test_empty_batch_fails_with_a_clear_message(tmp_path, trained_project):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images found"):
        load_flow_module("monitoring").monitoring(
            str(tmp_path / "empty"), root=str(trained_project)
        )


def test_missing_champion_fails_with_a_clear_message(tmp_path, trained_project):
    batch = _batch(tmp_path, "b", seed=9)
    with pytest.raises(FileNotFoundError, match="histoflow run"):
        load_flow_module("monitoring").monitoring(
            str(batch), root=str(trained_project), model_uri="models:/no_such_model@champion"
        )
