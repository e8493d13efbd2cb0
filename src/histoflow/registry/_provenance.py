"""What a training run records about where it ran (machine, package versions) and its state.

A version's state is its ``dvc.lock``: every stage's inputs and outputs by hash, recorded as the
run's ``dvc.md5.*`` tags. :func:`commit_with_lock` finds the git commit holding that lock, the
one ``git checkout <commit> && dvc checkout`` restores the version from.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, distributions, version
from pathlib import Path

from histoflow.dvc import parse_lock_hashes

__all__ = ["commit_with_lock", "environment_tags", "frozen_requirements", "machine_tags"]

_MAX_COMMITS = 500  # commits of dvc.lock searched, newest first

# The packages whose versions change what a model is or how it is tracked.
KEY_PACKAGES = (
    "histoflow",
    "torch",
    "torchvision",
    "timm",
    "lightning",
    "transformers",
    "numpy",
    "scikit-learn",
    "pillow",
    "dvc",
    "prefect",
    "mlflow",
    "evidently",
    "great-expectations",
)


def machine_tags() -> dict[str, str]:
    """``machine.*`` tags: OS, Python, CPU model, count and bf16 path, memory, CUDA device.

    What a bit-for-bit reproduction needs to match besides the package versions: the CPU's
    bf16 kernels (``machine.bf16``), the GPU, and torch's thread count.
    """
    import torch

    from histoflow.device import cpu_bf16_path

    tags = {
        "machine.platform": platform.platform(),
        "machine.hostname": platform.node(),
        "machine.python": platform.python_version(),
        "machine.cpus": str(os.cpu_count()),
        "machine.cpu": _cpu_model(),
        "machine.bf16": cpu_bf16_path(),
        "machine.torch_threads": str(torch.get_num_threads()),
        "machine.cuda": str(torch.cuda.is_available()),
    }
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        tags["machine.memory_gib"] = f"{pages * page_size / 2**30:.1f}"
    except (ValueError, OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        tags["machine.gpu"] = torch.cuda.get_device_name(0)
    return tags


def environment_tags() -> dict[str, str]:
    """``package.<name>`` tags with the installed versions of :data:`KEY_PACKAGES`."""
    tags = {}
    for name in KEY_PACKAGES:
        try:
            tags[f"package.{name}"] = version(name)
        except PackageNotFoundError:
            continue
    return tags


def frozen_requirements() -> str:
    """Every installed distribution as ``name==version`` lines, sorted (a ``pip freeze``)."""
    names = {f"{d.metadata['Name']}=={d.version}" for d in distributions() if d.metadata["Name"]}
    return "\n".join(sorted(names, key=str.lower)) + "\n"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def commit_with_lock(root: Path, hashes: dict[str, str]) -> str | None:
    """The newest commit (reachable from HEAD) whose ``dvc.lock`` records exactly ``hashes``.

    None when no commit does (the run's ``dvc.lock`` was never committed), there are no
    hashes, or ``root`` is not a git repository.
    """
    if not hashes:
        return None
    commits = _git(root, "log", f"--max-count={_MAX_COMMITS}", "--format=%H", "--", "dvc.lock")
    for commit in (commits or "").split():
        text = _git(root, "show", f"{commit}:dvc.lock")
        if text is not None and parse_lock_hashes(text) == hashes:
            return commit
    return None


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, errors="replace"
        )
    except FileNotFoundError:  # no git on this machine
        return None
    return proc.stdout if proc.returncode == 0 else None
