"""The monitoring flows: drift on features, embeddings and predictions against the champion's reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from histoflow.data.synthetic import generate
from histoflow.tiny import TINY_DATA


def _batch(tmp_path, name, **kwargs):
    args = {**TINY_DATA, "per_class": 12, "patients_per_class": 4, **kwargs}
    generate(tmp_path / name, **args)
    return tmp_path / name


def _greyscale_batch(folder, n=36, size=32):
    """Brain-MRI-like greyscale slices: a bright oval on black, another modality altogether."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    for i in range(n):
        a, b = rng.uniform(0.25, 0.4, 2)
        head = ((yy / a) ** 2 + (xx / b) ** 2 < 1) * rng.uniform(120, 200)
        noise = rng.normal(0, 12, (size, size))
        Image.fromarray(np.clip(head + noise, 0, 255).astype(np.uint8), "L").save(
            folder / f"slice_{i:03d}.png"
        )
    return folder


@pytest.fixture
def monitor(flow_module, prefect_harness):
    """``monitor(batch, project, **kwargs)``: the monitoring flow on one batch folder."""

    def run(batch, project, **kwargs):
        return flow_module("monitoring").monitoring(str(batch), root=str(project), **kwargs)

    return run


def test_in_distribution_batch_shows_no_drift(tmp_path, trained_project, monitor):
    summary = monitor(_batch(tmp_path, "same_lab", seed=7), trained_project)
    report = trained_project / "monitoring/reports/same_lab"
    saved = json.loads((report / "drift.json").read_text())
    assert saved["drift_detected"] is False and saved["action"] == summary["action"]
    assert set(saved["signals"]) == {"features", "embeddings", "predictions"}
    assert summary["drift_detected"] is False, summary["signals"]
    assert (report / "drift.html").stat().st_size > 10_000
    assert len((report / "predictions.csv").read_text().splitlines()) == 1 + 36
    assert summary["action"]["action"] == "none" and summary["action"]["taken"] is False


def test_stain_shifted_batch_drifts_in_colour_features(tmp_path, trained_project, monitor):
    summary = monitor(_batch(tmp_path, "other_lab", seed=8, stain_shift=1.0), trained_project)
    features = summary["signals"]["features"]
    assert summary["drift_detected"] is True and features["drifted"] is True
    drifted = {c for c, v in features["columns"].items() if v["drifted"]}
    assert {"od_hematoxylin", "mean_b"} & drifted, drifted


def test_greyscale_batch_of_another_modality_drifts(tmp_path, trained_project, monitor):
    summary = monitor(_greyscale_batch(tmp_path / "mri"), trained_project)
    signals = summary["signals"]
    assert summary["drift_detected"] is True
    assert signals["features"]["drifted"] and signals["embeddings"]["drifted"], signals
    # No stain in greyscale: those columns cannot be compared and are named, not crashed on.
    assert "od_hematoxylin" in signals["features"]["dropped_columns"]
    assert summary["performance"] is None  # no labels in a flat folder


def test_labelled_batch_gets_a_performance_section(tmp_path, trained_project, monitor):
    summary = monitor(_batch(tmp_path, "labelled", seed=9), trained_project)
    performance = summary["performance"]
    assert performance["n"] == 36 and 0.0 <= performance["accuracy"] <= 1.0
    assert set(performance["per_class_recall"]) == {"adipose", "lymphocytes", "stroma"}
    # The champion has conformal sets (#14): their size and, with labels, their coverage are
    # in drift.json and on the page's verdict panel.
    sets = summary["prediction_sets"]
    assert sets["n_labelled"] == 36 and 0.0 <= sets["coverage"] <= 1.0, sets
    assert sets["mean_set_size"] > 0 and sets["reference_mean_set_size"] > 0, sets
    saved = json.loads((trained_project / "monitoring/reports/labelled/drift.json").read_text())
    assert saved["prediction_sets"] == sets
    page = (trained_project / "monitoring/reports/labelled/drift.html").read_text()
    panel = page[page.index('id="histoflow-verdict"') :][:4000]
    assert f"prediction sets</b>: mean size {sets['mean_set_size']:.2f}" in panel
    assert f"coverage {sets['coverage']:.3f} on 36 labelled images" in panel


def test_empty_batch_fails_with_a_clear_message(tmp_path, trained_project, monitor):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images found"):
        monitor(tmp_path / "empty", trained_project)


def test_corrupt_batch_fails_with_a_clear_message(tmp_path, trained_project, monitor):
    batch = tmp_path / "corrupt"
    batch.mkdir()
    for i in range(3):
        (batch / f"tile_{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match="none of the 3 files .* could be read"):
        monitor(batch, trained_project)


def test_missing_champion_fails_with_a_clear_message(tmp_path, trained_project, monitor):
    with pytest.raises(FileNotFoundError, match="histoflow run"):
        monitor(
            _batch(tmp_path, "b", seed=9),
            trained_project,
            model_uri="models:/no_such_model@champion",
        )


def test_inbox_reports_each_batch_once_and_retries_failures(
    tmp_path, trained_project, flow_module, prefect_harness
):
    import shutil

    project = tmp_path / "project"
    shutil.copytree(trained_project, project, symlinks=True)
    inbox = project / "monitoring/inbox"
    _batch(inbox, "monday", seed=11)
    (inbox / "broken").mkdir(parents=True)
    (inbox / "broken" / "x.png").write_bytes(b"not an image")
    flows = flow_module("monitoring")

    first = flows.monitor_inbox(root=str(project))
    assert first == {"processed": ["monday"], "failed": ["broken"]}
    error = json.loads((project / "monitoring/reports/broken/error.json").read_text())
    assert "could be read" in error["message"]
    report = project / "monitoring/reports/monday/drift.json"
    stamp = report.stat().st_mtime_ns

    second = flows.monitor_inbox(root=str(project))
    assert second == {"processed": [], "failed": ["broken"]}  # monday not redone; broken retried
    assert report.stat().st_mtime_ns == stamp


def test_one_image_batch_is_too_few_to_judge(tmp_path, trained_project, monitor):
    import warnings

    batch = tmp_path / "single"
    batch.mkdir()
    tile = next((trained_project / "data").rglob("*.png"))
    (batch / tile.name).write_bytes(tile.read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's "Degrees of freedom <= 0" etc.
        summary = monitor(batch, trained_project)
    assert summary["verdict"] == "too few images" and summary["drift_detected"] is None
    assert summary["n_current"] == 1 and "monitor.min_batch_size" in summary["reason"]
    saved = json.loads((trained_project / "monitoring/reports/single/drift.json").read_text())
    assert saved["verdict"] == "too few images" and saved["action"]["taken"] is False


def test_a_bad_file_is_listed_and_the_rest_monitored(tmp_path, trained_project, monitor):
    batch = _batch(tmp_path, "with_a_bad_file", seed=12)
    (batch / "notes.png").write_text("a text file with an image's name")
    summary = monitor(batch, trained_project)
    assert summary["n_unreadable"] == 1 and summary["n_current"] == 36
    assert summary["unreadable"] == [str(batch / "notes.png")]
    assert "notes.png" in next(iter(summary["unreadable_errors"]))
