"""The ``captions`` stage reads the manifest a batch at a time: same outputs as in one batch."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest

from histoflow.captions.gallery import write_gallery
from histoflow.stages import captions as stage


@pytest.fixture(scope="module")
def copies(tiny_data, tmp_path_factory) -> tuple[Path, Path]:
    """The tiny data plus 12 copies of its images under new paths, and its manifest.

    The copies come after the originals, so with 5-row batches most of them meet their
    original in another batch.
    """
    root = tmp_path_factory.mktemp("streaming")
    data = root / "data"
    shutil.copytree(tiny_data, data)
    table = pd.read_csv(data / "manifest.csv", dtype=str)
    copied = table.iloc[::4].assign(path=lambda t: t["path"].str.replace(".png", "_copy.png"))
    for original, copy in zip(table.iloc[::4]["path"], copied["path"], strict=True):
        shutil.copy(data / original, data / copy)
    table = pd.concat([table, copied], ignore_index=True)
    table["sha256"] = [hashlib.sha256((data / p).read_bytes()).hexdigest() for p in table["path"]]
    table.to_parquet(root / "manifest.parquet", index=False)
    return data, root / "manifest.parquet"


def _io(copies, root: Path) -> tuple[stage.Inputs, stage.Outputs]:
    data, manifest = copies
    return (
        stage.Inputs(data=data, manifest=manifest),
        stage.Outputs(captions=root / "captions" / "captions.csv", gallery=root / "gallery"),
    )


def _counting(monkeypatch) -> list[str]:
    """Record the path of every image captioned (the real captioner captions it)."""
    captioned: list[str] = []
    load = stage._load_captioner

    def counting(captions, key):
        caption_batch, key = load(captions, key)

        def batch(images, rows):
            captioned.extend(row["path"] for row in rows)
            return caption_batch(images, rows)

        return batch, key

    monkeypatch.setattr(stage, "_load_captioner", counting)
    return captioned


def test_small_batches_write_the_same_csv_and_caption_each_image_once(
    tiny_params, copies, tmp_path, monkeypatch
):
    inputs, whole = _io(copies, tmp_path / "whole")
    expected = stage.run(tiny_params, inputs, whole)  # the 60 rows fit in one batch
    captioned = _counting(monkeypatch)
    monkeypatch.setattr(stage, "_BATCH_ROWS", 5)
    monkeypatch.setattr(stage, "_CSV_CHUNK", 7)
    _, batched = _io(copies, tmp_path / "batched")
    metrics = stage.run(tiny_params, inputs, batched)

    assert (metrics["n_images"], metrics["n_unique"], metrics["n_new"]) == (60, 48, 48)
    assert {k: v for k, v in metrics.items() if k != "seconds"} == {
        k: v for k, v in expected.items() if k != "seconds"
    }
    assert len(captioned) == len(set(captioned)) == 48
    assert not any(path.endswith("_copy.png") for path in captioned)  # originals come first
    assert batched.captions.read_bytes() == whole.captions.read_bytes()
    table, manifest = pd.read_csv(batched.captions), pd.read_parquet(inputs.manifest)
    assert table["path"].tolist() == manifest["path"].tolist()  # one row per row, in order
    assert table["sha256"].tolist() == manifest["sha256"].tolist()
    copy = table.set_index("path")["caption"]
    assert copy["stroma/stroma_00000_copy.png"] == copy["stroma/stroma_00000.png"]


def test_an_interrupted_run_resumes_after_its_stored_batches(
    tiny_params, copies, tmp_path, monkeypatch
):
    monkeypatch.setattr(stage, "_BATCH_ROWS", 5)
    cfg = tiny_params.model_copy(
        update={"captions": tiny_params.captions.model_copy(update={"batch_size": 2})}
    )
    load, calls = stage._load_captioner, []

    def failing(captions, key):
        caption_batch, key = load(captions, key)

        def batch(images, rows):
            calls.append(len(rows))
            if len(calls) == 4:  # after 3 stored batches, across manifest batches of 5 rows
                raise KeyboardInterrupt
            return caption_batch(images, rows)

        return batch, key

    monkeypatch.setattr(stage, "_load_captioner", failing)
    inputs, outputs = _io(copies, tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        stage.run(cfg, inputs, outputs)
    assert not outputs.captions.exists()

    monkeypatch.setattr(stage, "_load_captioner", load)
    captioned = _counting(monkeypatch)
    resumed = stage.run(cfg, inputs, outputs)
    stored = sum(calls[:3])
    assert (resumed["n_cached"], resumed["n_new"]) == (stored, 48 - stored)
    assert len(captioned) == 48 - stored
    _, clean = _io(copies, tmp_path / "clean")
    stage.run(cfg, inputs, clean)
    assert outputs.captions.read_bytes() == clean.captions.read_bytes()


def test_a_rerun_with_everything_cached_loads_no_captioner(
    tiny_params, copies, tmp_path, monkeypatch
):
    monkeypatch.setattr(stage, "_BATCH_ROWS", 5)
    inputs, outputs = _io(copies, tmp_path)
    stage.run(tiny_params, inputs, outputs)

    def unexpected(captions, key):
        raise AssertionError("a captioner was loaded with every caption cached")

    monkeypatch.setattr(stage, "_load_captioner", unexpected)
    metrics = stage.run(tiny_params, inputs, outputs)
    assert (metrics["n_cached"], metrics["n_new"], metrics["n_unique"]) == (48, 0, 48)


def test_the_gallery_shows_the_tiles_the_whole_table_shows(
    tiny_params, copies, tmp_path, monkeypatch
):
    monkeypatch.setattr(stage, "_BATCH_ROWS", 5)
    monkeypatch.setattr(stage, "_CSV_CHUNK", 5)  # the shown tiles' sha256s are in many chunks
    inputs, outputs = _io(copies, tmp_path)
    stage.run(tiny_params, inputs, outputs)
    # The gallery as written from the whole table in memory, every caption in it.
    table = pd.read_parquet(inputs.manifest).assign(
        caption=pd.read_csv(outputs.captions)["caption"], backend="morphology", model="morphology"
    )
    whole = write_gallery(
        table,
        tmp_path / "whole",
        data_root=inputs.data,
        per_class=tiny_params.captions.gallery_per_class,
        max_pixels=tiny_params.data.max_pixels,
    )
    page = (outputs.gallery / "gallery.html").read_text()
    assert page == whole.read_text()
    assert "20 images" in page  # each class's 16 tiles and 4 copies


def test_a_caption_lost_from_the_cache_is_an_error(tiny_params, copies, tmp_path, monkeypatch):
    inputs, outputs = _io(copies, tmp_path)
    stage.run(tiny_params, inputs, outputs)
    get_many = stage.CaptionCache.get_many

    def losing(self, shas, key):
        found = get_many(self, shas, key)
        found.pop(min(found), None)
        return found

    monkeypatch.setattr(stage.CaptionCache, "get_many", losing)
    with pytest.raises(RuntimeError, match="the caption cache lost 1 caption"):
        stage.run(tiny_params, inputs, outputs)


def test_an_empty_manifest_writes_the_header_only(tiny_params, copies, tmp_path):
    data, manifest = copies
    empty = tmp_path / "empty.parquet"
    pd.read_parquet(manifest).iloc[:0].to_parquet(empty, index=False)
    inputs, outputs = _io((data, empty), tmp_path)
    metrics = stage.run(tiny_params, inputs, outputs)
    assert (metrics["n_images"], metrics["n_unique"], metrics["n_new"]) == (0, 0, 0)
    assert outputs.captions.read_text() == ",".join(stage.COLUMNS) + "\n"
    assert "0 images, 0 classes" in (outputs.gallery / "gallery.html").read_text()
