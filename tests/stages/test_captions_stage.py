"""The ``captions`` stage on tiny data: cache hits, invalidation, resuming after a kill."""

from __future__ import annotations

import dataclasses
import hashlib
import html
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from histoflow.captions import cache as cache_module
from histoflow.captions.morphology import MorphologyCaptioner
from histoflow.data.images import load_rgb
from histoflow.stages import captions as stage

# Run in a subprocess: the stage with a captioner slowed to 0.1 s per image, so the test can
# kill it after a few batches are cached and before it finishes.
_SLOW_RUN = """
import pickle, sys, time
from histoflow.captions.morphology import MorphologyCaptioner
from histoflow.stages import captions as stage

_caption = MorphologyCaptioner.caption  # what the stage calls, once per image
def _slow(self, image, qc=None):
    time.sleep(0.1)
    return _caption(self, image, qc=qc)
MorphologyCaptioner.caption = _slow
with open(sys.argv[1], "rb") as fh:
    stage.run(*pickle.load(fh))
"""


def _validated_manifest(data: Path, out: Path, extra: pd.DataFrame | None = None) -> Path:
    """The columns of the validated manifest that the stage reads, without running validate."""
    table = pd.read_csv(data / "manifest.csv", dtype=str)
    if extra is not None:
        table = pd.concat([table, extra], ignore_index=True)
    table["split"] = ["train", "val", "test"] * (len(table) // 3) + ["train"] * (len(table) % 3)
    table["sha256"] = [hashlib.sha256((data / p).read_bytes()).hexdigest() for p in table["path"]]
    table.to_parquet(out, index=False)
    return out


@pytest.fixture(scope="module")
def manifest(tiny_data, tmp_path_factory) -> Path:
    return _validated_manifest(tiny_data, tmp_path_factory.mktemp("captions") / "m.parquet")


def _io(tiny_data, manifest, root: Path) -> tuple[stage.Inputs, stage.Outputs]:
    return (
        stage.Inputs(data=tiny_data, manifest=manifest),
        stage.Outputs(captions=root / "captions" / "captions.csv", gallery=root / "gallery"),
    )


def _with(cfg, **captions):
    return cfg.model_copy(update={"captions": cfg.captions.model_copy(update=captions)})


def test_rerun_with_nothing_changed_captions_nothing(
    tiny_params, tiny_data, manifest, tmp_path, monkeypatch
):
    inputs, outputs = _io(tiny_data, manifest, tmp_path)
    first = stage.run(tiny_params, inputs, outputs)
    table = pd.read_csv(outputs.captions)
    assert list(table.columns) == list(stage.COLUMNS)
    assert len(table) == first["n_images"] == first["n_unique"] == first["n_new"] == 48
    assert first["n_cached"] == 0 and first["backend"] == first["model"] == "morphology"
    assert table["caption"].str.len().min() > 20 and table["caption"].nunique() > 10
    assert (table["revision"] == cache_module.MORPHOLOGY_REVISION).all()
    assert (outputs.captions.parent / stage.CACHE_NAME).is_file()

    csv = outputs.captions.read_bytes()
    second = stage.run(tiny_params, inputs, outputs)
    assert second["n_new"] == 0 and second["n_cached"] == second["n_unique"] == 48
    assert outputs.captions.read_bytes() == csv
    monkeypatch.setattr(stage, "_CSV_CHUNK", 5)  # written 5 rows at a time: the same bytes
    stage.run(tiny_params, inputs, outputs)
    assert outputs.captions.read_bytes() == csv

    page = (outputs.gallery / "gallery.html").read_text()
    assert page.count("data:image/png;base64,") == 3 * tiny_params.captions.gallery_per_class
    assert html.escape(table["caption"].iloc[0]) in page  # the first tile of the first class


def test_changed_morphology_revision_recaptions_all(
    tiny_params, tiny_data, manifest, tmp_path, monkeypatch
):
    inputs, outputs = _io(tiny_data, manifest, tmp_path)
    stage.run(tiny_params, inputs, outputs)
    monkeypatch.setattr(cache_module, "MORPHOLOGY_REVISION", "edited")
    metrics = stage.run(tiny_params, inputs, outputs)
    assert metrics["n_new"] == metrics["n_unique"] and metrics["n_cached"] == 0
    assert set(pd.read_csv(outputs.captions)["revision"]) == {"edited"}


def test_new_prompt_or_backend_recaptions_all(
    tiny_params, tiny_data, manifest, tmp_path, monkeypatch
):
    # The real vlm needs a downloaded model: stand in a captioner that echoes the prompt.
    def echo(captions, key):
        return (lambda images, _rows: [f"{captions.prompt} <{im.size}>" for im in images]), key

    monkeypatch.setattr(stage, "_load_captioner", echo)
    inputs, outputs = _io(tiny_data, manifest, tmp_path)
    stage.run(tiny_params, inputs, outputs)  # morphology
    vlm = _with(tiny_params, backend="vlm", model="org/tiny-vlm", revision="abc", prompt="P1")
    ran = [stage.run(cfg, inputs, outputs) for cfg in (vlm, vlm, _with(vlm, prompt="P2"))]
    assert [(m["n_new"], m["n_cached"]) for m in ran] == [(48, 0), (0, 48), (48, 0)]
    table = pd.read_csv(outputs.captions)
    assert table["caption"].str.startswith("P2 <").all()
    assert set(table["backend"]) == {"vlm"} and set(table["model"]) == {"org/tiny-vlm"}
    page = (outputs.gallery / "gallery.html").read_text()
    assert "P2 &lt;(32, 32)&gt;" in page and "P2 <" not in page
    back = stage.run(tiny_params, inputs, outputs)  # morphology captions are still cached
    assert back["n_new"] == 0 and back["n_cached"] == 48


def test_identical_images_are_captioned_once(tiny_params, tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    shutil.copy(data / "stroma" / "stroma_00000.png", data / "stroma" / "copy.png")
    extra = pd.DataFrame([{"path": "stroma/copy.png", "label": "stroma"}])
    manifest = _validated_manifest(data, tmp_path / "m.parquet", extra)
    inputs, outputs = _io(data, manifest, tmp_path)
    metrics = stage.run(tiny_params, inputs, outputs)
    assert (metrics["n_images"], metrics["n_unique"], metrics["n_new"]) == (49, 48, 48)
    table = pd.read_csv(outputs.captions).set_index("path")
    assert table.at["stroma/copy.png", "caption"] == table.at["stroma/stroma_00000.png", "caption"]


def _cached_rows(path: Path) -> int:
    if not path.is_file():
        return 0
    conn = sqlite3.connect(path, timeout=5)
    try:
        return conn.execute("SELECT COUNT(*) FROM captions").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0
    finally:
        conn.close()


def test_killed_run_resumes_from_cached_batches(tiny_params, tiny_data, manifest, tmp_path):
    cfg = _with(tiny_params, batch_size=4)
    inputs, outputs = _io(tiny_data, manifest, tmp_path / "killed")
    args = tmp_path / "args.pkl"
    args.write_bytes(pickle.dumps((cfg, inputs, outputs)))
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SLOW_RUN, str(args)], stdout=subprocess.DEVNULL, stderr=err
        )
    cache = outputs.captions.parent / stage.CACHE_NAME
    try:
        deadline = time.monotonic() + 120  # imports take a few seconds on a busy machine
        while _cached_rows(cache) < 8 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"run ended before it was killed:\n{log.read_text()}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not outputs.captions.exists()

    resumed = stage.run(cfg, inputs, outputs)
    assert resumed["n_cached"] >= 8 and resumed["n_new"] > 0
    assert resumed["n_cached"] + resumed["n_new"] == resumed["n_unique"] == 48
    _, clean = _io(tiny_data, manifest, tmp_path / "clean")
    stage.run(cfg, inputs, clean)
    assert outputs.captions.read_bytes() == clean.captions.read_bytes()


def test_measurements_separate_the_synthetic_classes(tiny_data):
    rows = pd.read_csv(tiny_data / "manifest.csv")
    captioner = MorphologyCaptioner()
    measured = pd.DataFrame(
        [captioner.measure(load_rgb(tiny_data / path)) for path in rows["path"]]
    ).assign(label=rows["label"])
    # Tiles under 5% tissue (most adipose) skip the nuclear measurements: no nuclei there.
    measured["nuclei_density"] = measured["nuclei_density"].fillna(0.0)
    median = measured.groupby("label").median(numeric_only=True)
    assert median.at["lymphocytes", "nuclei_density"] > median.at["adipose", "nuclei_density"] + 20
    assert median.at["adipose", "tissue_fraction"] < median.at["lymphocytes", "tissue_fraction"] / 2
    assert median.at["stroma", "eosin_mean"] > median.at["lymphocytes", "eosin_mean"] + 0.03


def test_captions_are_stored_under_the_loaded_models_revision(
    tiny_params, tiny_data, manifest, tmp_path, monkeypatch
):
    # A hub revision such as "main" resolves to a commit only once the model is downloaded.
    def resolving(captions, key):
        return (lambda images, _rows: ["x"] * len(images)), dataclasses.replace(
            key, revision="c0ffee"
        )

    monkeypatch.setattr(stage, "_load_captioner", resolving)
    inputs, outputs = _io(tiny_data, manifest, tmp_path)
    vlm = _with(tiny_params, backend="vlm", model="org/tiny-vlm", revision="main", prompt="P")
    first, second = stage.run(vlm, inputs, outputs), stage.run(vlm, inputs, outputs)
    assert (first["n_new"], second["n_new"], second["n_cached"]) == (48, 0, 48)
    assert set(pd.read_csv(outputs.captions)["revision"]) == {"c0ffee"}


def test_vlm_backend_with_a_real_tiny_model(tiny_params, tiny_data, manifest, tmp_path):
    """The stage captions through a real (tiny, random) LLaVA saved locally, then reuses the cache."""
    from tiny_vlm import build_tiny_vlm

    build_tiny_vlm(tmp_path / "vlm")
    cfg = _with(
        tiny_params, backend="vlm", model=str(tmp_path / "vlm"), max_new_tokens=4, batch_size=16
    )
    inputs, outputs = _io(tiny_data, manifest, tmp_path / "out")
    first = stage.run(cfg, inputs, outputs)
    assert (first["backend"], first["n_new"]) == ("vlm", 48)
    table = pd.read_csv(outputs.captions)
    assert set(table["backend"]) == {"vlm"} and table["revision"].str.len().eq(64).all()
    assert stage.run(cfg, inputs, outputs)["n_new"] == 0
    assert stage.run(_with(cfg, prompt="Name the tissue."), inputs, outputs)["n_new"] == 48
