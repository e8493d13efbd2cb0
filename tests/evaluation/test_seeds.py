"""``evaluate.seeds``: the fusion head retrained per seed; the spread beside the CI, everywhere."""

from __future__ import annotations

import json

import numpy as np
import pytest

from histoflow.config import parse_params
from histoflow.metrics import HEADLINE
from histoflow.registry.tracking import evaluation_metrics
from histoflow.stages import evaluate


def test_evaluate_reports_the_spread_over_seeds(reproduced_project, tiny_params_dict, tmp_path):
    deployed = json.loads((reproduced_project / evaluate.Outputs().metrics).read_text())
    # Seed 42 is train_fusion.seed: retrained here, in this process, it must be the deployed
    # model again, bit for bit, so its metrics equal the ones `dvc repro` recorded.
    cfg = parse_params(
        tiny_params_dict(evaluate={"seeds": [42, 7], "explain_per_class": 0, "cross_group": None})
    )
    assert cfg.train_fusion.seed == 42
    inputs = evaluate.Inputs(
        **{k: reproduced_project / v for k, v in vars(evaluate.Inputs()).items()}
    )
    outputs = evaluate.Outputs(**{k: tmp_path / v for k, v in vars(evaluate.Outputs()).items()})

    saved = evaluate.run(cfg, inputs, outputs)

    spread = saved["seed_spread"]
    assert spread["seeds"] == [42, 7]
    for m in HEADLINE:
        values = spread[m]["values"]
        assert len(values) == 2
        assert spread[m]["mean"] == pytest.approx(np.mean(values))
        assert spread[m]["std"] == pytest.approx(np.std(values, ddof=1))
        assert values[0] == pytest.approx(deployed[m], abs=1e-12), m
    assert json.loads(outputs.metrics.read_text())["seed_spread"] == spread
    assert "mean &plusmn; std over seeds" in (outputs.report / "index.html").read_text()
    logged = evaluation_metrics(saved)  # what promotion reads
    assert logged["macro_recall.seed_std"] == spread["macro_recall"]["std"]


def test_seeds_need_two_distinct_values(tiny_params_dict):
    from histoflow.config import ConfigError

    for seeds in ([3], [3, 3]):
        with pytest.raises(ConfigError, match="evaluate.seeds"):
            parse_params(tiny_params_dict(evaluate={"seeds": seeds}))
