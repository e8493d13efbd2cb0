"""The validate stage on real files with one defect at a time: each fails or warns, naming the file."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

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
    """Add a row (and its file: a copy of ``src`` or ``image``) under a new patient."""
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    if image is None:
        shutil.copy(root / src, root / rel)
    else:
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
    stroma = m[m["label"] == "stroma"]
    return m.drop(index=stroma.index[2:]), ["'stroma' has 2"]


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
    keep = m[m["label"] == "stroma"].groupby("split").head(2)
    return pd.concat([m[m["label"] != "stroma"], keep], ignore_index=True), []


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
        _run(_params(tiny_params, min_per_class=3), root, tmp_path)
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
