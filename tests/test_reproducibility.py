"""The whole pipeline run twice gives every output bit for bit (same data, params, packages, CPU).

The promotion gate compares metrics: if a re-run on the same inputs moved them, a champion
could change by chance. Before the fix, train_fusion built its networks before seeding, so a
forced re-run changed its weights and with them every evaluate output.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml


def _declared_outputs(root: Path) -> list[Path]:
    """Every out, metric and plot file or folder that dvc.yaml declares, plus dvc.lock."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    paths = [
        next(iter(entry)) if isinstance(entry, dict) else entry
        for spec in stages.values()
        for key in ("outs", "metrics", "plots")
        for entry in spec.get(key, [])
    ]
    return [root / "dvc.lock", *(root / p for p in paths)]


def _hashes(root: Path) -> dict[str, str]:
    """sha256 of every file of every declared output, by path relative to ``root``."""
    files = []
    for path in _declared_outputs(root):
        files += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in files
        if f.name != ".gitignore"
    }


@pytest.mark.slow
def test_forced_rerun_reproduces_every_output_bit_for_bit(tmp_path, reproduced_project, dvc):
    # A copy in another folder: outputs must not depend on where the project lives either.
    root = tmp_path / "project"
    shutil.copytree(reproduced_project, root, symlinks=True)
    first = _hashes(root)
    assert any(p.startswith("outputs/train_fusion/ablations/") for p in first)
    assert {"metrics/evaluate.json", "reports/evaluate/index.html"} <= set(first)
    # What stages keep beside their outs (caches, checkpoints) would let the re-run skip the
    # very work it must repeat: without it, every image is captioned and embedded again.
    for kept in (root / "outputs").rglob(".*"):
        if kept.name != ".gitignore" and kept.exists():
            shutil.rmtree(kept) if kept.is_dir() else kept.unlink()

    dvc(root, "repro", "--force")

    second = _hashes(root)
    assert set(second) == set(first)
    changed = sorted(p for p in first if first[p] != second[p])
    assert not changed, f"not reproduced bit for bit: {changed}"
