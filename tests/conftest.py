"""Shared fixtures: the repository, tiny synthetic data, tiny params, tiny projects.

Everything here is made by the tests themselves (no downloads, no ../shared data): a few
dozen 32 px tiles and models small enough to train in seconds on two CPU cores. Tests get all
of it as fixtures (folders add their own conftest.py); nothing imports this file.
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pandas as pd
import pytest
import yaml
from filelock import FileLock

from histoflow import tiny
from histoflow.config import Params, parse_params
from histoflow.data.synthetic import generate
from histoflow.project import DEFAULTS, environment, load_flow
from histoflow.tiny import TINY, TINY_DATA

REPO = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)

# The order xdist deals files out in (`make test` passes --no-loadscope-reorder; its default
# deals the files with the most tests first). Each worker is dealt two files, in turn, then one
# more whenever it finishes one. The longest chain goes first, to the first worker, which builds
# the session's project in the background anyway: the forced re-run waits for that build, then
# takes two minutes more; that worker's second file is a short one. Then the long files that
# need no shared project, then those that wait for one. The rest follow in collection order. A
# file missing here only runs later; nothing else depends on the list.
_LONGEST_FIRST = (
    "tests/test_reproducibility.py",  # first worker
    "tests/test_recipes_end_to_end.py",
    "tests/stages/test_validate_defects.py",
    "tests/test_pipeline_contract.py",  # first worker's second: a few seconds
    "tests/stages/test_train_encoder.py",
    "tests/test_layouts.py",
    "tests/monitoring/test_report.py",
    "tests/stages/test_fusion_memory.py",
    "tests/flows/test_training_flow.py",
    "tests/flows/test_served_deployments.py",
    "tests/test_orchestration.py",
    "tests/flows/test_monitoring_flow.py",
    "tests/test_recipes.py",
    "tests/registry/test_mlflow_server.py",
    "tests/stages/test_embed_distributed.py",
)


@pytest.fixture(autouse=True)
def _sigint_as_python_starts():
    """Each test leaves Ctrl-C's handler as Python sets it.

    Under xdist the first test of each worker has been seen to leave SIGINT ignored (source not
    found; not the imports, not when the same tests run in one process), and every process a
    later test starts inherits an ignored SIGINT: `histoflow run` then shrugs off Ctrl-C.
    """
    yield
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def _tiny_params_dict(**overrides: dict) -> dict:
    """The repository's params.yaml with the tiny overrides (and any more) applied."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in [*TINY.items(), *overrides.items()]:
        raw[section] = {**raw[section], **copy.deepcopy(values)}
    return raw


@pytest.fixture(scope="session")
def repo() -> Path:
    """This repository's root (params.yaml, dvc.yaml, recipes/, flows/...)."""
    return REPO


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """The environment's scripts folder: ``histoflow``, ``dvc``, ``mlflow``."""
    return Path(BIN)


@pytest.fixture(scope="session")
def tiny_params_dict():
    """``tiny_params_dict(**{section: overrides})``: the tiny params as a plain dict."""
    return _tiny_params_dict


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
    """The tiny params, parsed."""
    return parse_params(_tiny_params_dict())


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 3-class, 48-tile synthetic dataset (read-only: copy before changing it)."""
    out = tmp_path_factory.mktemp("tiny") / "data"
    generate(out, **TINY_DATA)
    return out


def _make_project(root: Path, data: Path, params: dict | None = None) -> Path:
    """A fresh git + DVC project at ``root`` with this repository's pipeline and ``data``.

    ``params`` is a whole params dict (default: the tiny params); ``data`` is copied, so a test
    may change the project's images without touching the shared tiny dataset.
    """
    return tiny.make_project(root, data, params or _tiny_params_dict(), repo=REPO, link=False)


def _dvc(root: Path, *args: str) -> str:
    """Run dvc in ``root``; fail the test with its output if it fails."""
    proc = subprocess.run([f"{BIN}/dvc", *args], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def make_project():
    """``make_project(root, data, params=None)``: a fresh git + DVC project of this pipeline."""
    return _make_project


@pytest.fixture(scope="session")
def dvc():
    """``dvc(root, *args)``: run dvc; fail the test with its output if it fails."""
    return _dvc


def _shared(tmp_path_factory, worker_id: str, name: str, build) -> Path:
    """``build(folder)`` once per session, then this worker's own copy of ``folder``.

    Under pytest-xdist the first worker to need it builds it in the temporary folder the
    workers share (the others wait on a file lock) and every worker takes a copy, so no two
    workers run dvc in one repository; without workers it is built in place.
    """
    if worker_id == "master":
        return build(tmp_path_factory.mktemp(name) / "project")
    shared = _build_once(tmp_path_factory, name, build)
    root = tmp_path_factory.mktemp(name) / "project"
    shutil.copytree(shared, root, symlinks=True)
    return root


def _build_once(tmp_path_factory, name: str, build) -> Path:
    """``build`` into the workers' shared temporary folder, unless a worker already did."""
    shared = tmp_path_factory.getbasetemp().parent / name
    done = Path(f"{shared}.done")
    with FileLock(f"{shared}.lock"):
        if not done.is_file():
            shutil.rmtree(shared, ignore_errors=True)  # a worker that failed half-way
            build(shared)
            done.touch()
    return shared


def _reproduce(data: Path):
    def build(root: Path) -> Path:
        _dvc(_make_project(root, data), "repro")
        return root

    return build


@pytest.fixture(autouse=True, scope="session")
def _start_reproducing(tmp_path_factory, worker_id, _offline_environment):
    """The first worker starts the shared `dvc repro` at once, in the background.

    Its own tests go on meanwhile; a worker that needs the project sooner waits on the lock.
    """
    if worker_id != "gw0":
        yield
        return
    data = tmp_path_factory.mktemp("prebuilt") / "data"
    generate(data, **TINY_DATA)
    build = threading.Thread(
        target=_build_once, args=(tmp_path_factory, "reproduced", _reproduce(data))
    )
    build.start()
    yield
    build.join()


@pytest.fixture(scope="session")
def reproduced_project(tmp_path_factory, tiny_data, worker_id) -> Path:
    """A project whose whole pipeline has run once with real `dvc repro` (do not modify)."""
    return _shared(tmp_path_factory, worker_id, "reproduced", _reproduce(tiny_data))


def _feature_store(folder: Path, tensors: dict, index: pd.DataFrame | None = None):
    """``tensors`` written as ``embed`` writes its feature store (in batches), opened to read."""
    from histoflow.embeddings.store import INDEX_FILE, FeatureStore, SafetensorsStream

    folder.mkdir(parents=True, exist_ok=True)
    spec = {k: (v.numpy().dtype, tuple(v.shape)) for k, v in tensors.items()}
    with SafetensorsStream(folder / "features.safetensors", spec, {}) as out:
        for k, v in tensors.items():
            for s in range(0, len(v), 7):
                out.write(k, s, v[s : s + 7].numpy())
    n = len(next(iter(tensors.values())))
    if index is None:
        index = pd.DataFrame({"path": [f"{i}.png" for i in range(n)], "label": "a"})
    index.to_csv(folder / INDEX_FILE, index=False)
    return FeatureStore(folder)


@pytest.fixture(scope="session")
def feature_store():
    """``feature_store(folder, tensors, index=None)``: a real feature store of these tensors."""
    return _feature_store


@pytest.fixture(scope="session")
def bomb_png(tmp_path_factory) -> Path:
    """A decompression bomb: a 12000 x 12000 1-bit PNG, 17 KB on disk, 144 M pixels decoded.

    Written chunk by chunk, so the test process never holds the pixels either.
    """
    side = 12000
    row = b"\x00" + bytes(side // 8)  # filter byte, then 8 black pixels per byte
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's own test harness: a temporary local API and database for the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory, reproduced_project, worker_id, request) -> Path:
    """A copy of the reproduced project after one training flow run: champion = v1.

    Prefect's harness starts only on the worker that builds it (17 s of CPU a worker), not on
    every worker whose tests merely read the trained project.
    """

    def build(root: Path) -> Path:
        request.getfixturevalue("prefect_harness")
        shutil.copytree(reproduced_project, root, symlinks=True)
        load_flow("training", REPO).training(root=str(root))
        return root

    return _shared(tmp_path_factory, worker_id, "trained", build)
