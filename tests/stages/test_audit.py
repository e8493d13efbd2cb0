"""Stage ``audit`` on the session's tiny pipeline, and ``exclude`` reaching ``train_fusion``."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from histoflow.evaluation.label_audit import read_excluded
from histoflow.stages import audit, train_fusion


def _under(root, outputs):
    return type(outputs)(**{f: root / getattr(outputs, f) for f in outputs.__dataclass_fields__})


def test_audit(reproduced_project):
    out = _under(reproduced_project, audit.Outputs())
    metrics = json.loads(out.metrics.read_text())
    cases = pd.read_csv(out.cases)
    assert len(cases) == metrics["tiles"] == 48
    assert cases["case_confidence"].between(0, 1).all()
    assert metrics["cases_source"] == "patient_id"  # the tiny data names its patients
    leakage = metrics["leakage"]
    gaps = [leakage["random"][p] - leakage["grouped"][p] for p in leakage["random"]]
    assert leakage["gap"] == pytest.approx(max(gaps), abs=1e-6)
    assert len(pd.read_csv(out.label_issues)) == metrics["label_issues"]
    assert read_excluded(out.excluded) == set()  # warning: reported, nothing dropped
    assert "Leakage index" in (out.report / "summary.md").read_text()
    fusion = json.loads((reproduced_project / train_fusion.Outputs().metrics).read_text())
    assert fusion["excluded_by_audit"] == 0


def test_exclude_drops_suspect_labels_from_training(reproduced_project, tiny_params, tmp_path):
    features = tmp_path / "embed"
    shutil.copytree(reproduced_project / audit.Inputs().features, features)
    index = pd.read_csv(features / "index.csv", dtype=str, keep_default_na=False)
    # Three adipose tiles relabelled lymphocytes: the audit should doubt at least one.
    flipped = index.index[index["label"] == "adipose"][:3]
    index.loc[flipped, "label"] = "lymphocytes"
    index.to_csv(features / "index.csv", index=False)
    cfg = tiny_params.model_copy(
        update={
            "audit": tiny_params.audit.model_copy(update={"label_issues": "exclude"}),
            # Only what the exclusion reaches: the fusion head, briefly, without ablations.
            "train_fusion": tiny_params.train_fusion.model_copy(
                update={"ablations": (), "epochs": 2, "patience": 1}
            ),
        }
    )
    out = _under(tmp_path, audit.Outputs())
    metrics = audit.run(cfg, audit.Inputs(data=reproduced_project / "data", features=features), out)

    excluded = read_excluded(out.excluded)
    issues = pd.read_csv(out.label_issues)
    assert excluded == set(issues["path"]) and metrics["excluded"] == len(excluded) > 0
    assert excluded & set(index.loc[flipped, "path"])
    assert (out.report / "gallery.html").is_file()

    fused = train_fusion.run(
        cfg,
        train_fusion.Inputs(features=features, excluded=out.excluded),
        _under(tmp_path, train_fusion.Outputs()),
    )
    dropped = index["path"].isin(excluded) & index["split"].isin(["train", "val"])
    assert fused["excluded_by_audit"] == int(index["path"].isin(excluded).sum())
    assert dropped.any()
