"""dvc.yaml, params.yaml, the stage modules and the training flow agree with each other."""

from __future__ import annotations

import dataclasses
from pathlib import PurePosixPath

import pytest
import yaml

from conftest import REPO
from histoflow import dvc
from histoflow.config import Params, load_params
from histoflow.stages import STAGE_NAMES, get_stage

DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
PARAMS = load_params(REPO / "params.yaml")


def _resolve(entry) -> str:
    path = next(iter(entry)) if isinstance(entry, dict) else entry
    return path.replace("${data.root}", str(PARAMS.data.root))


def test_stages_in_dvc_yaml_are_the_stage_modules_in_order():
    assert list(DVC_YAML["stages"]) == list(STAGE_NAMES)
    assert dvc.stage_order(REPO) == list(STAGE_NAMES)


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_stage_declares_what_its_module_reads_and_writes(name):
    spec = DVC_YAML["stages"][name]
    module = get_stage(name)
    assert spec["cmd"] == f"histoflow stage {name}"
    assert tuple(spec["params"]) == module.PARAMS
    deps = {_resolve(d) for d in spec["deps"]}
    inputs = module.Inputs(
        **({"data": PARAMS.data.root} if "data" in module.Inputs.__dataclass_fields__ else {})
    )
    for field in dataclasses.fields(inputs):
        assert str(PurePosixPath(getattr(inputs, field.name))) in deps, (
            f"{name}: input {field.name} is not a dvc dep"
        )
    declared = {_resolve(o) for key in ("outs", "metrics", "plots") for o in spec.get(key, [])}
    written = {
        str(PurePosixPath(getattr(module.Outputs(), f.name)))
        for f in dataclasses.fields(module.Outputs)
    }
    assert written == declared, (
        f"{name}: module writes {sorted(written)}, dvc.yaml declares {sorted(declared)}"
    )
    assert (REPO / f"src/histoflow/stages/{name}.py").is_file()


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_params_keys_exist(name):
    for key in get_stage(name).PARAMS:
        section, _, field = key.partition(".")
        alias = {"validate": "validate_"}.get(section, section)
        model = Params.model_fields[alias].annotation
        assert not field or field in model.model_fields, key


def test_every_params_section_is_a_stage_or_shared():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    # A stage that only reads shared sections (reference reads monitor) has no section of its own.
    own = {s for s in STAGE_NAMES if any(k.split(".")[0] == s for k in get_stage(s).PARAMS)}
    assert set(raw) == own | {"data", "registry", "monitor", "deploy"}


def test_flow_runs_stages_from_dvc_yaml():
    source = (REPO / "flows/training.py").read_text()
    assert "dvc.stage_order" in source and "dvc.repro" in source
    assert "histoflow stage" not in source  # the flow never re-implements a stage
