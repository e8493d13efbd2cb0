"""What a training run records about where it ran: machine, package versions."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, distributions, version

__all__ = ["environment_tags", "frozen_requirements", "machine_tags"]

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
    """``machine.*`` tags: OS, Python, CPU count and model, memory, CUDA device."""
    import torch

    tags = {
        "machine.platform": platform.platform(),
        "machine.hostname": platform.node(),
        "machine.python": platform.python_version(),
        "machine.cpus": str(os.cpu_count()),
        "machine.cpu": _cpu_model(),
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
