"""A real `dvc repro` of the whole pipeline in a temporary git repository."""

from __future__ import annotations

import json

import yaml

from histoflow.dvc import ran_stages
from histoflow.stages import STAGE_NAMES


def test_full_repro_then_noop_then_fusion_only_change(tmp_path, reproduced_project, dvc):
    # reproduced_project ran `dvc repro` once; work on a copy so other tests keep theirs.
    import shutil

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

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train_fusion"]["dropout"] = 0.2
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran_stages(dvc(root, "repro")) == ["train_fusion", "evaluate"]


def test_repro_fails_clearly_on_an_empty_data_folder(tmp_path, make_project, tiny_params_dict):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".keep").write_text("")
    root = make_project(tmp_path / "project", empty, tiny_params_dict())
    import subprocess

    proc = subprocess.run(["dvc", "repro", "validate"], cwd=root, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "holds no images" in proc.stdout + proc.stderr
    assert "histoflow data synth" in proc.stdout + proc.stderr
