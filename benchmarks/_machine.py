"""What every benchmark records about the machine it ran on, beside its figures."""

from __future__ import annotations

import os
import platform

__all__ = ["machine_info"]


def machine_info(load_before: tuple[float, ...] | None = None) -> dict:
    """Core count, Python version and load average (before, if given, and now)."""
    info = {"cpus": os.cpu_count(), "python": platform.python_version()}
    if load_before is not None:
        info["load_average_before"] = [round(x, 2) for x in load_before]
    info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return info
