"""Hardware choice: CUDA when present, else CPU; bf16 autocast where the hardware has it."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["autocast", "cpu_bf16_path", "cpu_supports_bf16", "pick_device", "use_bf16"]


def pick_device(accelerator: str = "auto") -> torch.device:
    """``cuda`` when asked or available (for ``auto``), otherwise ``cpu``."""
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise RuntimeError(
            "accelerator 'gpu' requested but CUDA is not available; use 'auto' or 'cpu'"
        )
    if accelerator in ("gpu", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


@functools.cache
def cpu_bf16_path() -> str:
    """The CPU's native bf16 matmul: ``amx_bf16`` (Intel AMX), ``avx512_bf16``, or ``none``.

    Each path has its own kernels, so bf16 results differ (slightly) between them: the model
    card records which one a model was trained with.
    """
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "none"
    return next((f for f in ("amx_bf16", "avx512_bf16") if f in flags), "none")


def cpu_supports_bf16() -> bool:
    """True on CPUs with native bf16 matmul (AMX or AVX512-BF16), where autocast pays off."""
    return cpu_bf16_path() != "none"


def use_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Resolve a ``precision`` setting (auto, bf16, 32) for ``device``."""
    if precision == "32":
        return False
    if precision == "bf16":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_supports_bf16()


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """bf16 autocast on ``device`` when ``enabled``, a no-op otherwise."""
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled):
        yield
