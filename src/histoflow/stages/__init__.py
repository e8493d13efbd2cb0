"""Pipeline stages: one module per ``dvc.yaml`` stage.

Each has ``PARAMS``, ``Inputs``, ``Outputs`` and a pure ``run(cfg, inputs, outputs) -> metrics``,
and is cheap to import (its libraries load inside ``run``).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from types import ModuleType

from histoflow.config import Params

__all__ = ["STAGE_NAMES", "default_io", "get_stage", "run_stage"]

# Pipeline order; dvc.yaml is the definition, and a contract test keeps the two in step.
STAGE_NAMES = (
    "validate",
    "captions",
    "train_encoder",
    "embed",
    "train_fusion",
    "evaluate",
    "reference",
)


def get_stage(name: str) -> ModuleType:
    """The stage module; imported lazily so ``histoflow --help`` stays fast."""
    if name not in STAGE_NAMES:
        close = difflib.get_close_matches(name, STAGE_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown stage {name!r}{hint}; stages are: {', '.join(STAGE_NAMES)}")
    return importlib.import_module(f"histoflow.stages.{name}")


def default_io(name: str, cfg: Params) -> tuple[object, object]:
    """The stage's default ``Inputs`` (data folder from params) and ``Outputs``."""
    module = get_stage(name)
    fields = {f.name for f in dataclasses.fields(module.Inputs)}
    inputs = module.Inputs(data=cfg.data.root) if "data" in fields else module.Inputs()
    return inputs, module.Outputs()


def run_stage(name: str, cfg: Params) -> dict:
    """Run one stage with its default paths, relative to the working directory."""
    inputs, outputs = default_io(name, cfg)
    return get_stage(name).run(cfg, inputs, outputs)
