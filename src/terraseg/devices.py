"""What this machine's devices can do: CPU instruction sets, native bf16, and the training precision.

Detected, never assumed: CPU models change from machine to machine (one had AVX-512 BF16, where
bf16 inference ran 3.5x faster than float32; another only AVX2, where it ran 6x slower).
"""

from __future__ import annotations

import os
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


def training_device(accelerator: str = "auto") -> str:
    """The device a training run uses for ``train.accelerator``.

    Args:
        accelerator: Lightning's accelerator setting ('auto', 'gpu', 'cuda', 'cpu', ...).

    Returns:
        'cuda' when the setting allows a GPU and one is present, else 'cpu'.
    """
    return "cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"


def run_precision(setting: str, device: str) -> str:
    """The Lightning precision a training run uses: ``train.precision``, with 'auto' resolved for ``device``.

    Args:
        setting: 'auto', '32', 'bf16-mixed' or '16-mixed'.
        device: the training device.
    """
    return training_precision(device) if setting == "auto" else setting


def inference_precision(lightning_precision: str) -> str:
    """The inference precision ('32', 'bf16', '16') that computes as a Lightning training precision does.

    Training speaks Lightning's vocabulary ('bf16-mixed', '16-mixed', '32'), inference backends their
    own ('bf16', '16', '32'); this is the one translation between them.

    Args:
        lightning_precision: a Lightning precision string.
    """
    return {"bf16-mixed": "bf16", "16-mixed": "16"}.get(lightning_precision, "32")


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision setting: bfloat16 for 'bf16' / 'bf16-mixed', float16 for '16' / '16-mixed',
    None (no autocast) for float32.

    Args:
        precision: an inference ('32', 'bf16', '16') or Lightning training ('bf16-mixed', '16-mixed') precision.
    """
    return torch.bfloat16 if precision.startswith("bf16") else torch.float16 if precision.startswith("16") else None


def resolve_device(device: str | None = "auto") -> str:
    """The torch device an ``auto`` (or empty) device setting means on this machine.

    Args:
        device: 'auto' / None / '' (CUDA when :func:`torch.cuda.is_available`, else 'cpu'), or an
            explicit device ('cpu', 'cuda', 'cuda:1'), returned as given.

    Returns:
        A torch device string.
    """
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def inference_batch_size(device: str, window: int, bands: int = 3, cap: int = 32) -> int:
    """Windows per forward pass for inference when none is set: 4 on a CPU, from free memory on CUDA.

    On a CPU a few windows already keep every core busy (larger batches only add latency and memory).
    On CUDA the batch is the largest power of two up to ``cap`` whose estimated activations fit in half
    of the free device memory (:func:`torch.cuda.mem_get_info`); the estimate, 1 KiB per pixel of
    window, is a U-Net / ResNet34 forward in float32 with a wide margin
    (``benchmarks/predict_throughput.py`` prints the measured peak as ``gpu_peak_mb``).

    Args:
        device: torch device string.
        window: window side in pixels.
        bands: input bands.
        cap: largest batch.

    Returns:
        A batch size >= 1.
    """
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return 4
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    per_window = window * window * (1024 + 4 * bands)
    n = 1
    while n * 2 <= cap and n * 2 * per_window <= free / 2:
        n *= 2
    return n


def loader_options(num_workers: int | None, device: str = "cpu") -> dict:
    """DataLoader keyword arguments for training on ``device``.

    Args:
        num_workers: the config's worker count, or None to choose from the machine.
        device: 'cpu' or 'cuda'.

    Returns:
        ``num_workers`` (given, else on CUDA ``min(12, cores - 2)``; on a CPU 0 up to 4 cores, else
        ``min(4, cores // 4)``: the network step dominates there), ``persistent_workers`` and
        ``prefetch_factor`` when workers run, ``pin_memory`` on CUDA.
    """
    import os

    cores = os.cpu_count() or 1
    gpu = device.startswith("cuda")
    if num_workers is None:
        num_workers = min(12, max(cores - 2, 1)) if gpu else (0 if cores <= 4 else min(4, cores // 4))
    kw: dict = {"num_workers": num_workers, "pin_memory": gpu}
    if num_workers > 0:
        kw |= {"persistent_workers": True, "prefetch_factor": 4 if gpu else 2}
    return kw


__all__ = [
    "cpu_flags",
    "cpu_model",
    "inference_batch_size",
    "loader_options",
    "native_bf16",
    "resolve_device",
    "training_precision",
]


def is_main_process() -> bool:
    """True unless this process is a non-zero rank of a distributed run.

    Read from the environment the launchers set before the process starts: ``RANK`` (torchrun,
    Kubeflow's PyTorchJob), ``SLURM_PROCID`` (srun), else ``NODE_RANK`` and ``LOCAL_RANK`` (Lightning's
    own launcher sets ``LOCAL_RANK`` in the processes it starts).
    """
    env = os.environ
    for key in ("RANK", "SLURM_PROCID"):
        if env.get(key, "").isdigit():
            return int(env[key]) == 0
    return int(env.get("NODE_RANK", "0") or 0) == 0 and int(env.get("LOCAL_RANK", "0") or 0) == 0
