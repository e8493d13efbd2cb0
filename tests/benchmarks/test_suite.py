"""The benchmark suite (benchmarks/suite.py): discovery, failures, and every real module in quick mode.

These check that the suite runs and records what it measures, never how fast anything is.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "benchmarks" / "suite.py"


def _suite(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SUITE), *args], cwd=cwd, capture_output=True, text=True
    )


def _results(out: Path, *, quick: bool) -> dict:
    found = sorted(out.glob("*-quick.json" if quick else "*.json"))
    assert len(found) == 1, f"expected one results file in {out}, found {found}"
    md = found[0].with_suffix(".md")
    assert md.is_file(), f"{md} missing beside {found[0]}"
    return json.loads(found[0].read_text()) | {"_md": md.read_text()}


def _fake_benchmarks(folder: Path) -> Path:
    """A benchmark folder: a good module, a failing one, a malformed one, a helper, a script."""
    folder.mkdir()
    (folder / "good.py").write_text(
        textwrap.dedent(
            """
            def run(quick=False, repeats=3):
                base = 1.0 if quick else 10.0
                return [
                    {"figure": "speed", "unit": "items/s",
                     "samples": [base * (i + 1) for i in range(repeats)], "target": ">= 1"},
                    {"figure": "ratio | piped", "unit": "x", "samples": [2.0] * repeats},
                ]
            """
        )
    )
    (folder / "broken.py").write_text(
        "def run(quick=False, repeats=3):\n    raise OSError('disk gone\\nlast output line')\n"
    )
    (folder / "malformed.py").write_text(
        "def run(quick=False, repeats=3):\n    return [{'figure': 'x', 'unit': 's', 'samples': []}]\n"
    )
    (folder / "_helper.py").write_text("def run(quick=False, repeats=3):\n    return []\n")
    (folder / "script.py").write_text("print('not a benchmark')\n")
    return folder


def test_suite_runs_found_modules_and_records_failures(tmp_path):
    bench = _fake_benchmarks(tmp_path / "bench")
    out = tmp_path / "results"

    proc = _suite("--dir", str(bench), "--out", str(out), "--repeats", "4")

    assert proc.returncode == 1, proc.stdout + proc.stderr  # two modules failed
    results = _results(out, quick=False)
    assert list(results["modules"]) == ["broken", "good", "malformed"]  # no helper, no script
    good = results["modules"]["good"]
    assert good["error"] is None
    speed = good["figures"][0]
    assert speed["samples"] == [10.0, 20.0, 30.0, 40.0]
    assert speed["summary"] == {
        "median": 25.0,
        "min": 10.0,
        "max": 40.0,
        "iqr": [17.5, 32.5],
        "n": 4,
    }
    assert "OSError: disk gone" in results["modules"]["broken"]["error"]
    assert "'samples' must be a non-empty list" in results["modules"]["malformed"]["error"]
    assert results["repeats"] == 4 and results["quick"] is False
    assert results["machine"]["cpus"] >= 1 and "load_average_before" in results["machine"]
    md = results["_md"]
    assert "| good | speed | 25.0 | 10.0 - 40.0 | items/s | 4 | >= 1 |" in md
    assert "ratio \\| piped" in md  # a pipe in a name must not break the table
    assert "| broken | **failed** | | | | | | OSError: disk gone |" in md


def test_suite_only_skip_and_quick(tmp_path):
    bench = _fake_benchmarks(tmp_path / "bench")
    out = tmp_path / "results"

    proc = _suite(
        "--dir", str(bench), "--out", str(out), "--quick", "--repeats", "1", "--only", "good"
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = _results(out, quick=True)
    assert list(results["modules"]) == ["good"]
    assert results["modules"]["good"]["figures"][0]["samples"] == [1.0]

    proc = _suite("--dir", str(bench), "--out", str(out), "--only", "nope")
    assert proc.returncode == 2 and "unknown benchmark(s) ['nope']" in proc.stderr


def test_on_demand_modules_run_only_when_named(tmp_path):
    bench = _fake_benchmarks(tmp_path / "bench")
    (bench / "hours.py").write_text(
        "ON_DEMAND = True\n\n\ndef run(quick=False, repeats=3):\n"
        "    return [{'figure': 'long', 'unit': 's', 'samples': [3.0] * repeats}]\n"
    )
    out = tmp_path / "results"
    proc = _suite("--dir", str(bench), "--out", str(out / "all"), "--quick", "--repeats", "1")
    assert "hours" not in _results(out / "all", quick=True)["modules"]
    proc = _suite(
        "--dir",
        str(bench),
        "--out",
        str(out / "named"),
        "--quick",
        "--repeats",
        "1",
        "--only",
        "hours",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(_results(out / "named", quick=True)["modules"]) == ["hours"]
    proc = _suite("--dir", str(bench), "--out", str(out), "--repeats", "0")
    assert proc.returncode == 2 and "--repeats must be at least 1" in proc.stderr


# Every module's quick mode is a smoke run of its real code, but those that run whole stages
# in child processes cost 20-50 s of CPU each (pipeline_demo: three Prefect servers), more than
# the suite's 12-minute budget on two cores carries. `make bench QUICK=1` runs every one of
# them (about 4 minutes); `make test` runs the cheap ones, one test each, and checks that the
# rest are still modules the suite finds.
_BENCH_ONLY = (
    "pipeline_demo",
    "pipeline_scale",
    "embed_throughput",
    "stain_normalization",
    "monitoring_report",
)
sys.path.insert(0, str(SUITE.parent))
from suite import _checked, discover  # noqa: E402 (benchmarks/ is not a package)

_MODULES = [m for m in discover() if m not in _BENCH_ONLY]


def test_the_quick_modules_are_the_ones_the_suite_runs():
    assert {"qc_throughput", "captions_throughput", "train_epoch"} <= set(_MODULES), _MODULES
    assert set(_BENCH_ONLY) <= set(discover())  # still found by `make bench`
    assert "pipeline_large" not in _MODULES and "transfer_real" not in _MODULES  # on demand


@pytest.mark.slow
@pytest.mark.parametrize("name", _MODULES)
def test_quick_benchmark_module_runs(name):
    """`make bench QUICK=1`: each module of benchmarks/ runs and gives well-formed figures.

    In this process: the suite's own child process (tested above with fake modules) would
    import torch and Lightning again, ~10 s of CPU a module, to run a few seconds of work.
    """
    figures = [_checked(f, name) for f in importlib.import_module(name).run(quick=True, repeats=1)]

    assert figures, f"{name} gave no figures"
    for f in figures:
        assert f["summary"]["n"] == len(f["samples"]) == 1, (name, f)
        assert f["samples"][0] > 0 or "overhead" in f["figure"], (name, f)


def test_large_run_projection_extends_the_measured_line():
    """pipeline_large's projection: time a + b x tiles through two sizes; memory flat or not."""
    pipeline_large = importlib.import_module("pipeline_large")

    def fig(n, what, unit, value):
        return {"figure": f"{n:,} tiles: {what}", "unit": unit, "samples": [value]}

    figures = [{"figure": "generate 400 synthetic tiles", "unit": "s", "samples": [9.0]}]
    for n in (100, 400):
        figures += [
            fig(n, "whole pipeline", "s", 1e6),  # a total, not a stage
            fig(n, "embed", "s", 5 + 0.5 * n),  # a = 5 s, b = 0.5 s a tile
            fig(n, "embed per tile", "ms", 1.0),
            fig(n, "embed peak memory (stage, without dvc)", "MiB", 1000 + 0.1 * (n - 100)),
            fig(n, "embed peak memory (largest process)", "MiB", 9000 * n),  # dvc's: not used
            fig(n, "fusion", "s", 100.0 - 0.01 * n),  # faster per tile when larger: no slope
            fig(n, "fusion peak memory (stage, without dvc)", "MiB", 100 + n),  # 4x: grows
            fig(n, "disk, feature store", "MiB", 2.0 * n),
        ]
    got = {f["figure"]: f["samples"][0] for f in pipeline_large.projection(figures, to=(1000,))}

    assert got["projected 1,000 tiles: embed"] == pytest.approx(505.0)
    assert got["projected 1,000 tiles: embed peak memory"] == pytest.approx(1030.0)  # flat
    assert got["projected 1,000 tiles: fusion"] == pytest.approx(96.0)
    assert got["projected 1,000 tiles: fusion peak memory"] == pytest.approx(1100.0)  # its line
    assert got["projected 1,000 tiles: whole pipeline"] == pytest.approx(601.0)
    assert got["projected 1,000 tiles: disk, feature store"] == pytest.approx(2000.0)
    assert pipeline_large.projection(figures[:9], to=(1000,)) == []  # one size: nothing


def test_measure_tells_the_stage_process_from_the_command_that_started_it(tmp_path):
    """dvc repro's own memory (hashing the data folder) must not pass for the stage's."""
    harness = importlib.import_module("_harness")
    child = "import time; block = bytearray(300 * 2**20); time.sleep(0.5)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    m = harness.measure([sys.executable, "-c", parent], tmp_path)
    assert m.children_peak_mib > 300  # the child's bytearray, from its high-water mark
    assert m.root_peak_mib < 200  # the parent only waited
    assert m.peak_rss_mib >= m.children_peak_mib  # wait4's: the largest of the tree


def test_large_run_counts_hard_linked_files_once(tmp_path):
    pipeline_large = importlib.import_module("pipeline_large")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one").write_bytes(b"x" * 100_000)
    (tmp_path / "a" / "two").hardlink_to(tmp_path / "a" / "one")
    one = pipeline_large._bytes(tmp_path / "a" / "one")

    assert one >= 100_000
    assert pipeline_large._bytes(tmp_path / "a") == one
