"""Reproducible training: one seed from params for everything random, deterministic kernels.

On CPU, the same data, params and package versions then give the same weights bit for bit
(tests/test_reproducibility.py runs the pipeline twice and compares every output). What can
still differ between machines (bf16 kernels of another CPU, GPU kernels without a
deterministic version) is listed in the README's *Reproducibility* section.
"""

from __future__ import annotations

import lightning as L

__all__ = ["DETERMINISTIC", "seed"]

# Lightning's Trainer(deterministic=...): torch's deterministic algorithms, cuDNN's included.
# "warn" rather than True: a GPU kernel without a deterministic version warns instead of
# stopping training. On CPU it changes neither the results nor (measured) the speed.
DETERMINISTIC = "warn"


def seed(value: int) -> None:
    """Seed Python, numpy, torch and DataLoader workers; call it before anything random is built."""
    L.seed_everything(value, workers=True, verbose=False)
