"""What this machine's devices can do: CPU instruction sets, native bf16, and the training precision.

Detected, never assumed: CPU models change from machine to machine (one had AVX-512 BF16, where
bf16 inference ran 3.5x faster than float32; another only AVX2, where it ran 6x slower).
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

import torch


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags (Linux ``/proc/cpuinfo``; empty elsewhere).

    Returns:
        Flags such as ``avx2``, ``avx512f``, ``avx512_bf16``, ``amx_bf16``, ``avx512_vnni``.
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo``, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` computes bf16 natively (so bf16 autocast is a speed-up, not an emulation).

    Args:
        device: 'cpu' or a CUDA device.

    Returns:
        CUDA: :func:`torch.cuda.is_bf16_supported`; CPU: AVX-512 BF16 or AMX-BF16 present.
    """
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def training_precision(device: str = "cpu") -> str:
    """Lightning precision for ``train.precision: auto``.

    Args:
        device: the accelerator training runs on ('cpu' or 'cuda').

    Returns:
        'bf16-mixed' where the device has native bf16, '16-mixed' on other CUDA devices, else '32'.
    """
    if native_bf16(device):
        return "bf16-mixed"
    return "16-mixed" if device.startswith("cuda") and torch.cuda.is_available() else "32"


def loader_options(num_workers: int | None, device: str = "cpu") -> dict:
    """DataLoader keyword arguments for training on ``device``.

    Args:
        num_workers: the config's worker count, or None to choose from the machine.
        device: 'cpu' or 'cuda'.

    Returns:
        ``num_workers`` (given, else on CUDA ``min(8, cores - 2)``; on a CPU 0 up to 4 cores, else
        ``min(4, cores // 4)``: the network step dominates there), ``persistent_workers`` and
        ``prefetch_factor`` when workers run, ``pin_memory`` on CUDA.
    """
    import os

    cores = os.cpu_count() or 1
    gpu = device.startswith("cuda")
    if num_workers is None:
        num_workers = min(8, max(cores - 2, 1)) if gpu else (0 if cores <= 4 else min(4, cores // 4))
    kw: dict = {"num_workers": num_workers, "pin_memory": gpu}
    if num_workers > 0:
        kw |= {"persistent_workers": True, "prefetch_factor": 4 if gpu else 2}
    return kw


__all__ = ["cpu_flags", "cpu_model", "loader_options", "native_bf16", "training_precision"]
