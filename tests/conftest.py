"""Shared fixtures: tiny synthetic data, tiny params, and a trained tiny project.

Everything here is made by the tests themselves (no downloads, no ../shared data): a few
dozen 32 px tiles and models small enough to train in seconds on two CPU cores.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from histoflow import tiny
from histoflow.config import Params, parse_params
from histoflow.data.synthetic import generate
from histoflow.project import DEFAULTS, environment, load_flow
from histoflow.tiny import TINY, TINY_DATA

REPO = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)

# (mean, std) of each per-image QC feature, for monitoring tests that need realistic tables
# without images; the scales differ on purpose.
FEATURE_STATS = {
    "brightness": (0.70, 0.05),
    "contrast": (0.20, 0.04),
    "blur": (150.0, 40.0),
    "tissue_fraction": (0.60, 0.15),
    "mean_r": (200.0, 12.0),
    "mean_g": (150.0, 15.0),
    "mean_b": (190.0, 10.0),
    "saturation": (0.30, 0.06),
    "od_hematoxylin": (0.45, 0.08),
    "od_eosin": (0.35, 0.07),
}


def tiny_params_dict(**overrides: dict) -> dict:
    """The repository's params.yaml with the tiny overrides (and any more) applied."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in [*TINY.items(), *overrides.items()]:
        raw[section] = {**raw[section], **copy.deepcopy(values)}
    return raw


@pytest.fixture(autouse=True, scope="session")
def _offline_environment(tmp_path_factory):
    """Keep tests off the network and out of the developer's own stores."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.update(
        {k: v for k, v in environment(REPO).items() if k in DEFAULTS},
        HF_HUB_OFFLINE="1",
        PATH=BIN + os.pathsep + os.environ["PATH"],  # `histoflow`, `dvc` for dvc.yaml cmds
    )


@pytest.fixture(scope="session")
def tiny_params() -> Params:
    return parse_params(tiny_params_dict())


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 3-class, 48-tile synthetic dataset (read-only: copy before changing it)."""
    out = tmp_path_factory.mktemp("tiny") / "data"
    generate(out, **TINY_DATA)
    return out


def make_project(root: Path, data: Path, params: dict | None = None) -> Path:
    """A fresh git + DVC project at ``root`` with this repository's pipeline and ``data``.

    ``params`` is a whole params dict (default: :func:`tiny_params_dict`); ``data`` is
    hard-linked in, so leave its files unchanged.
    """
    return tiny.make_project(root, data, params or TINY, repo=REPO)


def dvc(root: Path, *args: str) -> str:
    """Run dvc in ``root``; fail the test with its output if it fails."""
    proc = subprocess.run([f"{BIN}/dvc", *args], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def reproduced_project(tmp_path_factory, tiny_data) -> Path:
    """A project whose whole pipeline has run once with real `dvc repro` (do not modify)."""
    root = make_project(tmp_path_factory.mktemp("repro") / "project", tiny_data)
    dvc(root, "repro")
    return root


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's own test harness: a temporary local API and database for the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def load_flow_module(name: str):
    """Import ``flows/NAME.py`` from this repository."""
    return load_flow(name, REPO)


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory, reproduced_project, prefect_harness) -> Path:
    """A copy of the reproduced project after one training flow run: champion = v1."""
    root = tmp_path_factory.mktemp("trained") / "project"
    shutil.copytree(reproduced_project, root, symlinks=True)
    load_flow_module("training").training(root=str(root))
    return root
