"""A real `dvc repro` of the whole pipeline in a temporary git repository."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from histoflow.dvc import DvcError, ran_stages, repro
from histoflow.stages import STAGE_NAMES, get_stage, train_encoder


def test_full_repro_then_noop(tmp_path, reproduced_project, dvc):
    # reproduced_project ran `dvc repro` once; work on a copy so other tests keep theirs.
    root = tmp_path / "project"
    shutil.copytree(reproduced_project, root, symlinks=True)
    metrics = json.loads((root / "metrics/evaluate.json").read_text())
    for key in (
        "accuracy",
        "balanced_accuracy",
        "macro_recall",
        "macro_f1",
        "auroc",
        "per_class_recall",
    ):
        assert key in metrics
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert list(lock["stages"]) == list(STAGE_NAMES)

    assert ran_stages(dvc(root, "repro")) == []  # nothing changed: nothing runs
    # A change to one stage's params re-runs only that stage and those after it: checked by
    # tests/test_recipes.py's `dvc exp run -S train_fusion.lr=...` (params, train_fusion,
    # evaluate), which would cost a second fusion + evaluate run here.


@pytest.mark.parametrize(
    ("section", "change", "named"),
    [
        ("train_encoder", {"lrr": 0.01}, "train_encoder.lrr: unknown key"),
        ("train_encoder", {"lr": -0.01}, "train_encoder.lr = -0.01"),
    ],
)
def test_bad_params_fail_before_dvc_deletes_anything(
    tmp_path, reproduced_project, section, change, named
):
    root = tmp_path / "project"
    shutil.copytree(reproduced_project, root, symlinks=True)
    encoder, metrics = train_encoder.Outputs().model, train_encoder.Outputs().metrics
    before = {p: (root / p).read_bytes() for p in ("dvc.lock", metrics, encoder / "model.json")}
    params = yaml.safe_load((root / "params.yaml").read_text())
    params[section].update(change)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    proc = subprocess.run(["dvc", "repro"], cwd=root, capture_output=True, text=True)

    assert proc.returncode != 0
    assert named in proc.stdout + proc.stderr
    # train_encoder's outputs and its uncached metrics file are all still there.
    assert {p: (root / p).read_bytes() for p in before} == before
    assert (root / encoder / "weights.safetensors").is_file()


def test_uncached_metrics_have_a_copy_in_cached_outputs(reproduced_project):
    lock = yaml.safe_load((reproduced_project / "dvc.lock").read_text())["stages"]
    for name in ("validate", "train_encoder", "train_fusion", "evaluate"):
        outputs = get_stage(name).Outputs()
        copies = [
            reproduced_project / o["path"] / "metrics.json"
            for o in lock[name]["outs"]
            if (reproduced_project / o["path"] / "metrics.json").is_file()
        ]
        assert copies, f"{name}: no cached output holds a copy of {outputs.metrics}"
        assert json.loads(copies[0].read_text()) == json.loads(
            (reproduced_project / outputs.metrics).read_text()
        )


def test_repro_fails_clearly_on_an_empty_data_folder(tmp_path, make_project, tiny_params_dict):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".keep").write_text("")
    root = make_project(tmp_path / "project", empty, tiny_params_dict())
    proc = subprocess.run(["dvc", "repro", "validate"], cwd=root, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "holds no images" in proc.stdout + proc.stderr
    assert "histoflow data synth" in proc.stdout + proc.stderr
    # What the training flow's stage task reports: the stage's own error, not DVC's lines.
    with pytest.raises(DvcError) as err:
        repro("validate", root, echo=False)
    message = str(err.value)
    assert message.startswith("stage validate failed: ") and "holds no images" in message
    assert "ERROR: failed to reproduce" not in message
