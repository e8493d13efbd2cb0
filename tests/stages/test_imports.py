"""Stage modules are cheap to import: flows read their ``Inputs``/``Outputs`` without loading
the libraries the stages run on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from histoflow.stages import STAGE_NAMES

# Each costs seconds (torch, Lightning, Great Expectations, MLflow, Evidently) or half a second.
HEAVY = ("torch", "lightning", "great_expectations", "mlflow", "evidently", "matplotlib", "timm")


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_importing_a_stage_loads_no_heavy_library(name):
    code = (
        f"import sys, histoflow.stages.{name}\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"importing histoflow.stages.{name} loads {out}"
