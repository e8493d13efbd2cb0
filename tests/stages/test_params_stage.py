"""Stage ``params``: what the typed models cannot check (timm names) fails here, naming the key."""

from __future__ import annotations

import json

import pytest

from histoflow.config import parse_params
from histoflow.stages import get_stage


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"backbone": "resnet1"}, "train_encoder.backbone: unknown model 'resnet1'; did you mean"),
        ({"backbone": "hybrid", "branches": ["resnet18", "vit_nope"]}, "train_encoder.branches"),
        ({"backbone": "hf-hub:someone/else"}, "not a known foundation model"),
    ],
)
def test_unknown_encoder_names_fail_naming_the_key(tmp_path, tiny_params_dict, values, needle):
    stage = get_stage("params")
    outputs = stage.Outputs(checked=tmp_path / "outputs/params/checked.json")
    with pytest.raises(ValueError, match=needle):
        stage.run(parse_params(tiny_params_dict(train_encoder=values)), stage.Inputs(), outputs)
    assert not outputs.checked.exists()


def test_valid_params_always_write_the_same_record(tmp_path, tiny_params_dict):
    stage = get_stage("params")
    written = []
    for lr in (0.1, 0.2):
        outputs = stage.Outputs(checked=tmp_path / f"{lr}/params/checked.json")
        stage.run(parse_params(tiny_params_dict(train_fusion={"lr": lr})), stage.Inputs(), outputs)
        written.append(outputs.checked.read_bytes())
    assert written[0] == written[1] and json.loads(written[0]) == {"params": "valid"}
