"""Pipeline stages: one module per ``dvc.yaml`` stage.

Each has ``PARAMS``, ``Inputs``, ``Outputs`` and a pure ``run(cfg, inputs, outputs) -> metrics``,
and is cheap to import (its libraries load inside ``run``).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from pathlib import Path
from types import ModuleType

from histoflow.config import Params
from histoflow.io import write_json

__all__ = ["STAGE_NAMES", "default_io", "get_stage", "run_stage", "write_metrics"]

# Pipeline order; dvc.yaml is the definition, and a contract test keeps the two in step.
STAGE_NAMES = (
    "params",
    "validate",
    "captions",
    "train_encoder",
    "embed",
    "audit",
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


def write_metrics(path: Path, metrics: dict, *, copy_in: Path) -> None:
    """Write a stage's ``metrics/NAME.json`` and the same numbers inside a cached output folder.

    ``metrics/`` stays uncached so git can track it, and DVC deletes it before the stage runs;
    ``copy_in/metrics.json`` (``copy_in`` is one of the stage's DVC-cached outputs) keeps the
    numbers with the outputs they describe, so the uncached file is never their only copy.
    """
    write_json(Path(copy_in) / "metrics.json", metrics)
    write_json(path, metrics)
