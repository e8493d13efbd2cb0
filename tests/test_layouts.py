"""Every data layout the importers accept reaches a registered model.

Each layout is built from the tiny dataset's tiles (3 classes x 16 tiles, 8 patients per
class) and imported with ``histoflow data import`` as a user would. Then every stage runs on
it, in ``dvc.yaml``'s order and in this process (``run_stage``: the stage code a stage process
runs, without the 5-10 s of imports each process costs), and the run is registered in the
project's SQLite MLflow by ``registry.register_run``, the call the training flow makes. What
differs between layouts is how the splits come about, settled in ``validate`` before anything
trains; the test checks that too.

The same under ``histoflow run`` (DVC stage processes, the Prefect flow) costs about 3 minutes a
layout on two busy cores, so it runs only when asked: ``HISTOFLOW_LAYOUT_RUNS=1 pytest
tests/test_layouts.py``; the suite runs the flow itself on the synthetic layout
(``trained_project``).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from histoflow.config import parse_params
from histoflow.data.ingest import import_dataset
from histoflow.project import load_flow
from histoflow.registry import evaluation_metrics, register_run, tracking_uri
from histoflow.registry.tracking import use_tracking_uri
from histoflow.stages import (
    STAGE_NAMES,
    evaluate,
    get_stage,
    run_stage,
    validate,
)

# Patients 0-4 of each class train, 5 validates, 6-7 test, wherever the data gives splits.
_SPLIT_OF_PATIENT = ("train",) * 5 + ("val", "test", "test")
_BREAKHIS = {"adipose": ("B", "A"), "lymphocytes": ("B", "F"), "stroma": ("M", "DC")}
_MAGNIFICATIONS = ("40", "100", "200", "400")

# The least that still runs every stage: one encoder epoch, two fusion epochs, no ablations.
_CHEAP = {
    "validate": {"workers": 0},
    "train_encoder": {"epochs": 1},
    "embed": {"num_workers": 0},
    "train_fusion": {"epochs": 2, "patience": 1, "ablations": []},
    "evaluate": {"bootstrap": 20, "explain_per_class": 0, "cross_group": None},
}


def _tiles(tiny_data) -> pd.DataFrame:
    """The tiny dataset's manifest with each tile's file, patient number and split."""
    table = pd.read_csv(tiny_data / "manifest.csv", dtype=str)
    table["file"] = [tiny_data / p for p in table["path"]]
    number = table["patient_id"].str[1:].astype(int) % 8  # P000..P023 -> 0..7 per class
    table["split"] = [_SPLIT_OF_PATIENT[n] for n in number]
    table["number"] = number
    return table


def _copy(tiles, src, rel):
    for file, path in zip(tiles["file"], rel, strict=True):
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, src / path)
    return src


def _folder(splits):
    """``<class>/`` (splits ()) or ``<split>/<class>/`` folders, holding the given splits only."""

    def build(tiles, src):
        if not splits:
            return "folder", _copy(tiles, src, tiles["path"])
        # A missing split's tiles go to train: a train-only folder holds every tile.
        split = tiles["split"].where(tiles["split"].isin(splits), "train")
        return "folder", _copy(tiles, src, split + "/" + tiles["path"])

    return build


def _csv(with_split):
    def build(tiles, src):
        _copy(tiles, src, "images/" + tiles["path"])
        columns = ["path", "label", "patient_id", *(["split"] if with_split else [])]
        table = tiles.assign(path="images/" + tiles["path"])[columns]
        table.to_csv(src / "labels.csv", index=False)
        return "csv", src / "labels.csv"

    return build


def _medmnist(tiles, src):
    classes = sorted(tiles["label"].unique())
    arrays = {}
    for split, rows in tiles.groupby("split"):
        arrays[f"{split}_images"] = np.stack([np.asarray(Image.open(f)) for f in rows["file"]])
        arrays[f"{split}_labels"] = np.array([[classes.index(c)] for c in rows["label"]])
    src.mkdir()
    np.savez_compressed(src / "pathmnist.npz", **arrays, label_names=np.array(classes))
    return "medmnist", src / "pathmnist.npz"


def _breakhis(tiles, src):
    names = [
        f"SOB_{_BREAKHIS[label][0]}_{_BREAKHIS[label][1]}-14-{patient}-"
        f"{_MAGNIFICATIONS[i % 4]}-{i:03d}.png"
        for i, (label, patient) in enumerate(zip(tiles["label"], tiles["patient_id"], strict=True))
    ]
    return "breakhis", _copy(tiles, src, names)


# layout -> (how its source is built, the split origin validate must record)
_CARVED_ALL = {"train": "carved", "val": "carved", "test": "carved"}
LAYOUTS = {
    "class_folders": (_folder(()), _CARVED_ALL),
    "train_folder_only": (_folder(("train",)), {"train": "data", "val": "carved", "test": "carved"}),
    "train_test_folders": (_folder(("train", "test")), {"train": "data", "val": "carved", "test": "data"}),
    "train_val_test_folders": (_folder(("train", "val", "test")), dict.fromkeys(_CARVED_ALL, "data")),
    "csv_with_split": (_csv(with_split=True), dict.fromkeys(_CARVED_ALL, "data")),
    "csv_without_split": (_csv(with_split=False), _CARVED_ALL),
    "medmnist_npz": (_medmnist, dict.fromkeys(_CARVED_ALL, "data")),
    "breakhis_names": (_breakhis, _CARVED_ALL),
}  # fmt: skip


def _import(layout, tiny_data, tmp_path):
    build, _ = LAYOUTS[layout]
    fmt, src = build(_tiles(tiny_data), tmp_path / "source")
    import_dataset(fmt, src, tmp_path / "data", progress=False)
    return tmp_path / "data"


def _validate(cfg, data, out):
    outputs = validate.Outputs(
        manifest=out / "manifest.parquet", report=out / "report", metrics=out / "validate.json"
    )
    metrics = get_stage("validate").run(cfg, validate.Inputs(data=data), outputs)
    return metrics, pd.read_parquet(outputs.manifest)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_reaches_a_registered_model(
    layout, tiny_data, tiny_params_dict, repo, tmp_path, monkeypatch
):
    raw = tiny_params_dict(**_CHEAP)
    cfg = parse_params(raw)
    _import(layout, tiny_data, tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.chdir(tmp_path)

    metrics = run_stage("validate", cfg)
    # Every split with every class before anything trains, recorded as given or carved.
    assert metrics["split_origin"] == LAYOUTS[layout][1]
    assert metrics["n_images"] == 48
    # Layouts without patient ids get cases inferred from colour and pHash (#16); the tiny
    # tiles all come from one generator, so inferred cases span splits: a warning, never more.
    assert set(metrics["warnings"]) <= {"inferred_case_leak"}, metrics["warnings"]
    manifest = pd.read_parquet(validate.Outputs().manifest)
    for split, rows in manifest.groupby("split"):
        assert rows["label"].nunique() == 3, split
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert (manifest.groupby("patient_id")["split"].nunique() == 1).all()

    for name in STAGE_NAMES[STAGE_NAMES.index("validate") + 1 :]:
        run_stage(name, cfg)
    evaluated = json.loads(evaluate.Outputs().metrics.read_text())
    assert len(evaluated["per_class"]) == 3  # every class was scored on test

    use_tracking_uri(tracking_uri(tmp_path))
    registration = register_run(load_flow("training", repo).training_run(tmp_path), cfg)
    assert registration.version == "1" and registration.promoted, registration
    champion = MlflowClient().get_model_version_by_alias("histoflow", "champion")
    assert str(champion.version) == "1"
    # The encoder's probes (evaluate.probes) are on the model's run, as #13 compares encoders.
    logged = MlflowClient().get_run(champion.run_id).data.metrics
    assert (
        logged["probe.linear.macro_recall"]
        == evaluated["probes"]["results"]["linear"]["macro_recall"]
    )


def test_a_train_only_folder_splits_as_the_trained_synthetic_layout(
    tiny_data, tiny_params_dict, tmp_path
):
    # trained_project (tests/flows) trains and registers the synthetic layout: these splits.
    cfg = parse_params(tiny_params_dict(**_CHEAP))
    _, synthetic = _validate(cfg, tiny_data, tmp_path / "synthetic")
    train_only = tmp_path / "train_only"
    shutil.copytree(tiny_data, train_only)
    table = pd.read_csv(train_only / "manifest.csv").assign(split="train")
    table.to_csv(train_only / "manifest.csv", index=False)
    metrics, carved = _validate(cfg, train_only, tmp_path / "carved")
    assert metrics["split_origin"]["train"] == "data"
    pd.testing.assert_series_equal(carved["split"], synthetic["split"])


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("HISTOFLOW_LAYOUT_RUNS"),
    reason="about 3 minutes a layout: HISTOFLOW_LAYOUT_RUNS=1 runs the training flow on each",
)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_reaches_a_registered_model_through_histoflow_run(
    layout, tiny_data, tiny_params_dict, make_project, prefect_harness, repo, tmp_path
):
    data = _import(layout, tiny_data, tmp_path)
    root = make_project(tmp_path / "project", data, tiny_params_dict(**_CHEAP))

    result = load_flow("training", repo).training(root=str(root))

    assert result["version"] == "1", result
    validated = json.loads((root / validate.Outputs().metrics).read_text())
    assert validated["split_origin"] == LAYOUTS[layout][1]
    assert set(validated["split_sizes"]) == {"train", "val", "test"}
    evaluated = json.loads((root / evaluate.Outputs().metrics).read_text())
    assert len(evaluated["per_class"]) == 3  # every class was scored on test
    assert "macro_recall" in evaluation_metrics(evaluated)
