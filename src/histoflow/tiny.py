"""Tiny pipeline settings and the throw-away project they run in: tests and benchmarks share both.

Like timm's ``test_*`` models, they exist so a whole pipeline runs in seconds per stage.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from histoflow import dvc
from histoflow.project import environment

__all__ = ["TINY", "TINY_DATA", "make_project"]

# Overrides that shrink the default pipeline to a few seconds per stage.
TINY = {
    "data": {"image_size": 32, "val_fraction": 0.25, "test_fraction": 0.25},
    "validate": {"min_per_class": 3},
    "train_encoder": {
        "backbone": "test_resnet",
        "pretrained": False,
        "epochs": 3,
        "batch_size": 16,
        "lr": 0.005,
    },
    "embed": {"batch_size": 64, "token_grid": 2, "max_text_tokens": 32},
    "train_fusion": {
        "width": 32,
        "layers": 1,
        "heads": 2,
        "classifier_heads": 3,
        "epochs": 12,
        "batch_size": 16,
        "patience": 6,
        "lr": 0.003,
    },
    "evaluate": {
        "batch_size": 64,
        "bootstrap": 200,
        "probes": {"seeds": 2, "episodes": 10},  # every probe's path, a fraction of a second
        # One stain shift runs the certificate's whole path; every condition costs a re-embed.
        "robustness": {
            "stain": [0.5],
            "jpeg": [],
            "blur": [],
            "rescale": [],
            "leave_one_group_out": None,  # three more heads to train
        },
    },
}
# The synthetic dataset those params are sized for (histoflow.data.synthetic.generate kwargs).
TINY_DATA = {"classes": 3, "per_class": 16, "size": 32, "seed": 0, "patients_per_class": 8}


def make_project(
    root: Path, data: Path, params_overrides: dict | None = None, *, repo: Path, link: bool = True
) -> Path:
    """A fresh git + DVC project at ``root`` that runs ``repo``'s pipeline on ``data``.

    Copies ``repo``'s ``dvc.yaml``, ``flows/`` and ``src/`` (``dvc.yaml`` lists source files
    as deps, so the copies make code changes visible to DVC) and its ``params.yaml`` with the
    overrides, links ``data`` in, then ``git init``, ``dvc init`` and one commit.

    Args:
        root: the project folder (created).
        data: a dataset folder, hard-linked file by file into ``root/data`` (copied across
            file systems): treat the originals as read-only while the project lives.
        link: False copies ``data`` instead, for projects whose images will change.
        params_overrides: ``{section: {key: value}}`` merged into ``repo``'s params section by
            section (a full params dict works too, e.g. :data:`TINY` or a test's own).
        repo: the repository whose pipeline the project runs.

    Returns:
        ``root``.

    Raises:
        subprocess.CalledProcessError: a git command failed.
        histoflow.dvc.DvcError: ``dvc init`` failed.
    """
    root, repo = Path(root), Path(repo)
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(repo / "dvc.yaml", root / "dvc.yaml")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("flows", "src"):
        shutil.copytree(repo / folder, root / folder, ignore=ignore)
    shutil.copytree(data, root / "data", copy_function=_link_or_copy if link else shutil.copy2)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in (params_overrides or {}).items():
        params[section] = {**(params.get(section) or {}), **copy.deepcopy(values)}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "monitoring").mkdir(exist_ok=True)  # where new batches arrive (monitoring/inbox)
    (root / ".gitignore").write_text("/data\n/mlruns\n/.prefect\n/monitoring/inbox\n")
    git = ["git", "-c", "user.name=histoflow", "-c", "user.email=histoflow@localhost"]
    _run([*git, "init", "-q"], root)
    dvc.init(root)
    _run([*git, "add", "-A"], root)
    _run([*git, "commit", "-qm", "tiny project"], root)
    return root


def _run(cmd: list[str], root: Path) -> None:
    subprocess.run(cmd, cwd=root, env=environment(root), check=True, capture_output=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)
