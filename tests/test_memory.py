"""The malloc setting validate makes so that dropped table copies leave the process."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc's mallopt")
def test_freed_large_blocks_go_back_to_the_system():
    # In a fresh process: a 20 MiB block freed raises glibc's threshold to 20 MiB, so the next
    # 8 MiB arrays come from the heap and stay resident when freed, unless it is pinned.
    script = """
import sys
import numpy as np
from histoflow.memory import return_freed_memory
if sys.argv[1] == "pinned":
    assert return_freed_memory()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
np.ones(20 * 2**20, np.uint8)  # allocated and freed at once
kept = [np.ones(2**20) for _ in range(8)]  # 8 x 8 MiB
small = [np.ones(100) for _ in range(1000)]  # interleaved small blocks pin the heap's top
del kept
print(round(rss()))
"""
    rss = {
        mode: float(subprocess.check_output([sys.executable, "-c", script, mode], text=True))
        for mode in ("default", "pinned")
    }
    assert rss["default"] - rss["pinned"] > 40, rss
