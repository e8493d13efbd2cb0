"""The import contract in pyproject.toml holds: no lower layer imports a higher one."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from histoflow.stages import STAGE_NAMES

REPO = Path(__file__).resolve().parents[1]


def test_layers_run_one_way():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint), "--config", str(REPO / "pyproject.toml")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout and "2 kept" in proc.stdout


def test_every_stage_is_in_the_independence_contract():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "independence"]
    assert set(contract["modules"]) == {f"histoflow.stages.{name}" for name in STAGE_NAMES}
