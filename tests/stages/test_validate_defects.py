"""The validate stage on real files with one defect at a time: each fails or warns, naming the file."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from histoflow.data.manifest import printable_path
from histoflow.stages import get_stage
from histoflow.stages.validate import ContractViolation

VALIDATE = get_stage("validate")


def _dataset(tiny_data, root):
    """A copy of the tiny data with an explicit split per patient, as a CSV manifest."""
    shutil.copytree(tiny_data, root)
    manifest = pd.read_csv(root / "manifest.csv")
    patients = sorted(manifest["patient_id"].unique())
    split = {p: ("train", "train", "val", "test")[i % 4] for i, p in enumerate(patients)}
    manifest["split"] = manifest["patient_id"].map(split)
    return manifest


def _first(manifest, split="train", label="stroma"):
    return manifest[(manifest["split"] == split) & (manifest["label"] == label)].iloc[0]


def _add(manifest, root, src, rel, label, split, image=None):
    """Add a row (and its file: a copy of ``src``, ``image``, or none if False) as a new patient."""
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    if image is None and src is not None:
        shutil.copy(root / src, root / rel)
    elif image:
        image.save(root / rel)
    row = {
        "path": rel,
        "label": label,
        "patient_id": f"X{len(manifest)}",
        "split": split,
        "site": "site_a",
        "magnification": "20x",
    }
    return pd.concat([manifest, pd.DataFrame([row])], ignore_index=True)


def _drop(manifest, root, rows):
    """Remove rows from the manifest and their files from disk (no unlisted files left)."""
    for rel in manifest.loc[rows, "path"]:
        (root / rel).unlink()
    return manifest.drop(index=rows)


def _replace(root, rel, image):
    image.save(root / rel)


def unreadable(m, root):
    rel = _first(m).path
    (root / rel).write_bytes(b"")
    return m, [rel]


def outside_root(m, root):
    src = _first(m).path
    shutil.copy(root / src, root.parent / "outside.png")
    m = pd.concat(
        [m, pd.DataFrame([{**_first(m).to_dict(), "path": "../outside.png"}])], ignore_index=True
    )
    return m, ["../outside.png"]


def unknown_label(m, root):
    m = _add(m, root, _first(m).path, "ghost/g.png", "ghost", "train")
    return m, ["ghost/g.png"]


def class_min_count(m, root):
    stroma = m[m["label"] == "stroma"]  # one image left in each split: too few, none missing
    return _drop(m, root, stroma.index.difference(stroma.groupby("split").head(1).index)), [
        "'stroma' has 3"
    ]


def patient_leak(m, root):
    row = _first(m)
    m.loc[m["path"] == row.path, "split"] = "test"
    return m, [row.path]


def duplicate_across_splits(m, root):
    src = _first(m).path
    m = _add(m, root, src, "stroma/copy_in_test.png", "stroma", "test")
    return m, [src, "stroma/copy_in_test.png"]


def mode(m, root):
    rel = _first(m).path
    _replace(root, rel, Image.open(root / rel).convert("L"))
    return m, [rel]


def size(m, root):
    rel = _first(m).path
    _replace(root, rel, Image.open(root / rel).resize((8, 8)))
    return m, [rel]


def near_duplicate_across_splits(m, root):
    src = _first(m).path
    (root / "stroma" / "recompressed.jpg").unlink(missing_ok=True)
    Image.open(root / src).convert("RGB").save(root / "stroma" / "recompressed.jpg", quality=95)
    row = {
        "path": "stroma/recompressed.jpg",
        "label": "stroma",
        "patient_id": "X_jpeg",
        "split": "test",
        "site": "site_a",
        "magnification": "20x",
    }
    return pd.concat([m, pd.DataFrame([row])], ignore_index=True), ["stroma/recompressed.jpg"]


def blurred(m, root):
    rel = _first(m, label="lymphocytes").path
    _replace(root, rel, Image.open(root / rel).filter(ImageFilter.GaussianBlur(6)))
    return m, [rel]


def blank(m, root):
    rel = _first(m).path
    # White with sensor noise: blank, but not blurred.
    noise = np.random.default_rng(0).normal(0, 4, (32, 32, 3))
    _replace(root, rel, Image.fromarray(np.clip(248 + noise, 0, 255).astype(np.uint8)))
    return m, [rel]


def class_imbalance(m, root):
    stroma = m[m["label"] == "stroma"]
    return _drop(m, root, stroma.index.difference(stroma.groupby("split").head(2).index)), []


def conflicting_labels(m, root):
    src = _first(m, label="adipose").path
    m = _add(m, root, src, "stroma/looks_like_fat.png", "stroma", "train")
    return m, ["stroma/looks_like_fat.png"]


ERRORS = [
    unreadable,
    outside_root,
    unknown_label,
    class_min_count,
    patient_leak,
    duplicate_across_splits,
    mode,
    size,
]
WARNINGS = [near_duplicate_across_splits, blurred, blank, class_imbalance, conflicting_labels]


def _params(tiny_params, **validate):
    data = tiny_params.data.model_copy(update={"classes": ("adipose", "lymphocytes", "stroma")})
    return tiny_params.model_copy(
        update={
            "data": data,
            "validate_": tiny_params.validate.model_copy(update={"workers": 0, **validate}),
        }
    )


def _levels(tiny_params, **levels):
    return {"checks": tiny_params.validate.checks.model_copy(update=levels)}


def _run(cfg, root, tmp_path):
    out = VALIDATE.Outputs(
        manifest=tmp_path / "out/manifest.parquet",
        report=tmp_path / "report",
        metrics=tmp_path / "out/metrics.json",
    )
    return VALIDATE.run(cfg, VALIDATE.Inputs(data=root), out), out


def test_clean_data_passes_without_warnings(tiny_data, tiny_params, tmp_path):
    root = tmp_path / "data"
    _dataset(tiny_data, root).to_csv(root / "manifest.csv", index=False)
    metrics, _ = _run(_params(tiny_params), root, tmp_path)
    assert metrics["n_warnings"] == 0 and metrics["n_images"] == 48


@pytest.mark.parametrize("defect", ERRORS, ids=lambda f: f.__name__)
def test_error_defects_fail_naming_check_and_files(defect, tiny_data, tiny_params, tmp_path):
    root = tmp_path / "data"
    manifest, files = defect(_dataset(tiny_data, root), root)
    manifest.to_csv(root / "manifest.csv", index=False)
    with pytest.raises(ContractViolation) as err:
        _run(_params(tiny_params, min_per_class=4), root, tmp_path)
    message = str(err.value)
    fired = set(re.findall(r"ERROR \[(\w+)\]", message))
    assert fired == {defect.__name__}, message  # exactly this defect, nothing else
    for name in files:
        assert name in message
    assert (tmp_path / "report" / "report.html").is_file()
    assert not (tmp_path / "out/manifest.parquet").exists()


@pytest.mark.parametrize("defect", WARNINGS, ids=lambda f: f.__name__)
def test_warning_defects_are_reported_not_fatal(defect, tiny_data, tiny_params, tmp_path):
    root = tmp_path / "data"
    manifest, files = defect(_dataset(tiny_data, root), root)
    manifest.to_csv(root / "manifest.csv", index=False)
    metrics, out = _run(_params(tiny_params, max_class_ratio=2.0, min_per_class=2), root, tmp_path)
    assert metrics["warnings"] == [defect.__name__]
    html = (out.report / "report.html").read_text()
    for name in files:
        assert name in html


@pytest.mark.parametrize(
    ("mode", "dropped"),
    [
        ("exact", ["stroma/copy_in_test.png"]),
        ("near", ["stroma/copy_in_test.png", "stroma/recompressed.jpg"]),
    ],
)
def test_deduplicate_drops_eval_copies_and_says_why(
    mode, dropped, tiny_data, tiny_params, tmp_path
):
    root = tmp_path / "data"
    manifest, _ = duplicate_across_splits(_dataset(tiny_data, root), root)
    manifest, _ = near_duplicate_across_splits(manifest, root)
    manifest.to_csv(root / "manifest.csv", index=False)
    cfg = _params(tiny_params, deduplicate=mode)
    metrics, out = _run(cfg, root, tmp_path)
    kept = pd.read_parquet(out.manifest)["path"].tolist()
    assert set(dropped).isdisjoint(kept) and _first(manifest).path in kept
    assert metrics["n_deduplicated"] == len(dropped)
    assert metrics["deduplicated_by_split"] == {"test": len(dropped)}
    assert metrics["classes_missing_from_split"] == {}
    assert metrics["warnings"] == ([] if mode == "near" else ["near_duplicate_across_splits"])
    table = pd.read_csv(out.report / "deduplicated.csv")
    assert sorted(table["path"]) == sorted(dropped)
    assert table["reason"].str.contains(_first(manifest).path, regex=False).all()


def test_deduplicate_none_still_fails_on_cross_split_copies(tiny_data, tiny_params, tmp_path):
    root = tmp_path / "data"
    manifest, _ = duplicate_across_splits(_dataset(tiny_data, root), root)
    manifest.to_csv(root / "manifest.csv", index=False)
    with pytest.raises(ContractViolation, match="duplicate_across_splits") as err:
        _run(_params(tiny_params, deduplicate="none"), root, tmp_path)
    # The message says what to do, not only where the report is.
    message = str(err.value)
    assert "`validate.deduplicate: exact`" in message
    assert "`validate.checks.duplicate_across_splits: warning`" in message
    assert message.splitlines()[-1].startswith("Full report: ")


def _failure(cfg, root, tmp_path) -> str:
    with pytest.raises(ContractViolation) as err:
        _run(cfg, root, tmp_path)
    return str(err.value)


def _fired_checks(message: str) -> set[str]:
    return set(re.findall(r"ERROR \[(\w+)\]", message))


def test_a_decompression_bomb_is_a_finding_and_the_rest_is_validated(
    bomb_png, tiny_data, tiny_params, tmp_path
):
    root = tmp_path / "data"
    manifest = _add(_dataset(tiny_data, root), root, None, "stroma/bomb.png", "stroma", "train")
    shutil.copy(bomb_png, root / "stroma" / "bomb.png")
    manifest.to_csv(root / "manifest.csv", index=False)
    message = _failure(_params(tiny_params), root, tmp_path)
    assert _fired_checks(message) == {"unreadable"}, message
    assert "stroma/bomb.png" in message and "more than the limit of 16,777,216" in message
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert results["n_images"] == 49  # the other 48 were measured


def test_images_the_manifest_does_not_list_and_listed_ones_missing(
    tiny_data, tiny_params, tmp_path
):
    root = tmp_path / "data"
    manifest = _dataset(tiny_data, root)
    manifest.to_csv(root / "manifest.csv", index=False)
    (root / "lymphoma").mkdir()  # a new class folder the manifest does not know
    shutil.copy(root / _first(manifest).path, root / "lymphoma" / "new.png")
    shutil.copy(root / _first(manifest).path, root / "stroma" / "extra.png")
    message = _failure(_params(tiny_params), root, tmp_path)
    assert _fired_checks(message) == {"unlisted_files"}, message
    assert "2 images not listed (lymphoma/new.png, stroma/extra.png)" in message

    # As a warning the run goes on, and the metrics count them.
    metrics, _ = _run(
        _params(tiny_params, **_levels(tiny_params, unlisted_files="warning")), root, tmp_path
    )
    assert metrics["warnings"] == ["unlisted_files"] and metrics["n_unlisted"] == 2

    (root / _first(manifest, split="test").path).unlink()  # listed, no longer on disk
    message = _failure(
        _params(tiny_params, **_levels(tiny_params, unlisted_files="off")), root, tmp_path
    )
    assert _fired_checks(message) == {"unreadable"}, message
    assert "No such file" in message and _first(manifest, split="test").path in message


def test_a_link_to_a_file_outside_the_data_folder_is_outside_root(tiny_data, tiny_params, tmp_path):
    root = tmp_path / "data"
    manifest = _dataset(tiny_data, root)
    outside = tmp_path / "elsewhere.png"
    shutil.copy(root / _first(manifest).path, outside)
    (root / "stroma" / "link.png").symlink_to(outside)
    (root / "stroma" / "inside_link.png").symlink_to(root / _first(manifest, "val").path)
    manifest = _add(manifest, root, None, "stroma/link.png", "stroma", "train", image=False)
    manifest = _add(manifest, root, None, "stroma/inside_link.png", "stroma", "train", False)
    manifest.to_csv(root / "manifest.csv", index=False)
    message = _failure(_params(tiny_params), root, tmp_path)
    assert _fired_checks(message) == {"outside_root", "duplicate_across_splits"}, message
    outside_part = message[message.index("[outside_root]") :].split("- ERROR")[0]
    assert "stroma/link.png" in outside_part and "inside_link" not in outside_part


def test_a_file_name_that_is_not_utf8_is_named_and_the_rest_validated(
    tiny_data, tiny_params, tmp_path
):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    (root / "manifest.csv").unlink()  # the folder layout: every file on disk is read
    source = next((root / "stroma").glob("*.png"))
    bad = os.fsdecode(os.fsencode(root / "stroma") + b"/caf\xe9.png")  # Latin-1, not UTF-8
    shutil.copy(source, bad)
    message = _failure(_params(tiny_params), root, tmp_path)
    assert _fired_checks(message) == {"unreadable"}, message
    assert "stroma/caf\\xe9.png" in message and "not valid UTF-8" in message
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert results["n_images"] == 49
    cache = pd.read_parquet(tmp_path / "out" / ".qc_cache.parquet")
    assert len(cache) == 48 and cache["readable"].all()  # every other file measured and cached


def test_printable_names_are_kept_as_they_are_and_others_escaped():
    name = "".join(["stroma/", "café.png"])  # built at run time: not a shared constant
    assert printable_path(name) is name  # the same object: no copy per row of a table
    assert printable_path(os.fsdecode(b"stroma/caf\xe9.png")) == "stroma/caf\\xe9.png"


def test_train_only_data_gets_val_and_test_carved_and_says_so(tiny_data, tiny_params, tmp_path):
    root = tmp_path / "data"
    manifest = _dataset(tiny_data, root).assign(split="train")
    manifest.to_csv(root / "manifest.csv", index=False)
    metrics, out = _run(_params(tiny_params), root, tmp_path)
    assert metrics["split_origin"] == {"train": "data", "val": "carved", "test": "carved"}
    assert set(metrics["split_sizes"]) == {"train", "val", "test"}
    assert metrics["classes_missing_from_split"] == {}
    kept = pd.read_parquet(out.manifest)
    assert (kept.groupby("patient_id")["split"].nunique() == 1).all()


@pytest.mark.parametrize(
    ("splits", "update", "check", "remedy"),
    [
        # train/test given, val_fraction 0: nothing carves val.
        ({"train": "train", "val": "train", "test": "test"}, {"val_fraction": 0.0}, "empty_split",
         "no images in val (early stopping and model selection read it): it could not be carved"
         " from train, by patient: data.val_fraction is 0"),
        ({"train": "val", "val": "val", "test": "test"}, {}, "empty_split",
         "the data gives only val/test split(s), and histoflow carves missing splits from train"),
        # The data's test split lacks a class: say so before anything trains.
        ({"train": "train", "val": "val", "test": "test"}, {"drop": "stroma"},
         "class_missing_from_split", "none for ['stroma'] (its test recall cannot be measured"),
    ],
)  # fmt: skip
def test_a_split_the_pipeline_needs_is_checked_before_training(
    splits, update, check, remedy, tiny_data, tiny_params, tmp_path
):
    root = tmp_path / "data"
    manifest = _dataset(tiny_data, root)
    manifest["split"] = manifest["split"].map(splits)
    if "drop" in update:
        drop = (manifest["split"] == "test") & (manifest["label"] == update.pop("drop"))
        manifest = _drop(manifest, root, manifest.index[drop])
    manifest.to_csv(root / "manifest.csv", index=False)
    cfg = _params(tiny_params)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update=update)})
    message = _failure(cfg, root, tmp_path)
    assert _fired_checks(message) == {check}, message
    assert remedy in message


def test_excluding_qc_failures_may_not_empty_a_class_from_a_split(tiny_data, tiny_params, tmp_path):
    root = tmp_path / "data"
    manifest = _dataset(tiny_data, root)
    manifest.to_csv(root / "manifest.csv", index=False)
    noise = np.random.default_rng(0).normal(0, 4, (32, 32, 3))
    for rel in manifest.loc[
        (manifest["split"] == "test") & (manifest["label"] == "stroma"), "path"
    ]:
        _replace(root, rel, Image.fromarray(np.clip(248 + noise, 0, 255).astype(np.uint8)))
    with pytest.raises(ContractViolation, match=r"exclude removed .*\(test: \['stroma'\]\)"):
        _run(_params(tiny_params, qc_failures="exclude"), root, tmp_path)
    assert not (tmp_path / "out" / "manifest.parquet").exists()
