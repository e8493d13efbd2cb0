"""The committed data.dvc records exactly the dataset that `make demo` generates."""

from __future__ import annotations

import subprocess

import yaml

from histoflow.cli import main


def test_default_synthetic_dataset_matches_data_dvc(tmp_path, repo, bin_dir):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([bin_dir / "dvc", "init", "-q"], cwd=tmp_path, check=True)
    # The same command the Makefile's demo target runs on an empty data/.
    assert main(["data", "synth", "--out", str(tmp_path / "data")]) == 0
    subprocess.run([bin_dir / "dvc", "add", "-q", "data"], cwd=tmp_path, check=True)
    made = yaml.safe_load((tmp_path / "data.dvc").read_text())["outs"][0]
    committed = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]
    assert (made["md5"], made["nfiles"]) == (committed["md5"], committed["nfiles"])
