"""Choosing how a network runs on this machine: backend, precision and memory layout.

The fastest correct path differs by machine: on a CPU with native bf16 (AVX-512 BF16 or AMX),
PyTorch with bf16 autocast and channels_last ran 3.5x faster than float32 on the demo bundle; on an
AVX2-only CPU bf16 ran 6x *slower* and ONNX Runtime float32 was 2.2x faster than PyTorch; on CUDA
PyTorch with bf16 (fp16 where bf16 is missing) and channels_last is the standard fast path. So the
``auto`` choice is made in two steps:

1. **Detected features** decide the candidates: ``cuda`` -> PyTorch bf16/fp16 + channels_last;
   a CPU -> PyTorch float32 + channels_last, ONNX Runtime float32 when the bundle holds a graph,
   and PyTorch bf16 + channels_last only when the CPU has native bf16 instructions.
2. **A measured ranking** picks among several CPU candidates: each runs the same batch of windows
   (one warm-up each, then three interleaved rounds; the median) and the fastest wins; the first
   candidate (native bf16 where present) keeps its place unless another is at least 5% faster. The ranking is cached
   per CPU model, torch version, network and window in ``runtime.json`` of the cache
   folder (``$TERRASEG_CACHE``, default the user's cache folder: :func:`terraseg.settings.cache_dir`), so it is measured once per machine and model.

Explicit ``backend`` / ``precision`` / ``channels_last`` options always win over ``auto``.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from terraseg.devices import cpu_model, inference_precision, native_bf16, training_precision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """How a network runs.

    Attributes:
        backend: 'torch' or 'onnx'. precision: '32', 'bf16' or '16'. channels_last: NHWC layout.
        reason: why this was chosen (detected features, measured ranking or explicit options).
    """

    backend: str
    precision: str
    channels_last: bool
    reason: str = ""


CACHE = "runtime.json"  # the measured rankings, in the cache folder (terraseg.io.cachefile)


def _measure(runs: dict, x: torch.Tensor, rounds: int = 3) -> dict[str, float]:
    """Median seconds per candidate, timed in interleaved rounds (A B C, A B C, ...) after one warm-up each,
    so a burst of load elsewhere on the machine hits every candidate alike. Each run goes through the
    predictor's own call (``probabilities`` on a tensor, then the argmax), conversions included."""
    for run in runs.values():
        run.probabilities(x).argmax(1)  # warm-up (allocations, oneDNN primitive selection)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for k, run in runs.items():
            t0 = time.perf_counter()
            run.probabilities(x).argmax(1)
            times[k].append(time.perf_counter() - t0)
    return {k: round(statistics.median(v), 4) for k, v in times.items()}


def choose_runtime(bundle: Any, device: str = "cpu", backend: str = "auto", precision: str = "auto",
                   channels_last: bool | None = None, window: int = 256, batch_size: int = 4, measure: bool = True) -> Runtime:
    """Pick backend, precision and layout for a bundle on this machine (see module doc).

    Args:
        bundle: a loaded :class:`terraseg.bundle.Bundle` (its network and optional ONNX graph).
        device: 'cpu' or a CUDA device. backend: 'auto', 'torch' or 'onnx'. precision: 'auto', '32',
            'bf16' or '16'. channels_last: None for automatic (on for PyTorch).
        window: window side (pixels) of the measured batch. batch_size: windows per measured batch.
        measure: rank several CPU candidates by timing them (else the first candidate).

    Returns:
        The chosen :class:`Runtime`.
    """
    cl = True if channels_last is None else channels_last
    if backend == "onnx-int8":
        return Runtime("onnx-int8", "int8", False, "explicit options")
    if backend != "auto" and precision != "auto":
        return Runtime(backend, precision, cl if backend == "torch" else False, "explicit options")
    if bundle.manifest.baseline is not None:
        return Runtime("torch", "32" if precision == "auto" else precision, cl, "a pixel baseline")
    if device.startswith("cuda"):
        p = precision if precision != "auto" else inference_precision(training_precision(device))
        return Runtime("torch" if backend == "auto" else backend, p, cl, f"CUDA: {'native bf16' if p == 'bf16' else 'fp16'}")
    has_graph = "model.onnx" in bundle.extras
    candidates: list[Runtime] = []
    if backend in ("auto", "torch"):
        if native_bf16("cpu") and precision in ("auto", "bf16"):
            candidates.append(Runtime("torch", "bf16", cl, "CPU has native bf16"))
        if precision in ("auto", "32"):
            candidates.append(Runtime("torch", "32", cl, "float32"))
    if backend in ("auto", "onnx") and has_graph and precision in ("auto", "32"):
        candidates.append(Runtime("onnx", "32", False, "bundle has an ONNX graph"))
    if not candidates:
        return Runtime("torch" if backend == "auto" else backend, "32" if precision == "auto" else precision, cl, "fallback")
    if len(candidates) == 1 or not measure:
        return candidates[0]
    return _ranked(bundle, candidates, window, batch_size)


def backend_for(bundle: Any, options: Any, device: str, window: int, batch_size: int) -> Any:
    """The backend that runs a bundle's network for segmentation and classification alike.

    A pixel baseline runs its scikit-learn model; a network runs on the runtime :func:`choose_runtime`
    picks for this machine (or the one asked for): PyTorch in float32 or bf16/fp16 autocast, or the
    bundle's ONNX graph (float32 or INT8) in ONNX Runtime.

    Args:
        bundle: the loaded bundle. options: :class:`terraseg.config.inference.InferenceConfig` (backend,
            precision, layout, threads). device: the resolved device. window: input side in pixels (the
            measured batch). batch_size: inputs per forward pass.

    Returns:
        A backend (:mod:`terraseg.infer.backends`) with ``runtime`` set for networks.

    Raises:
        BundleError: 'onnx' asked for a bundle without an ONNX graph.
    """
    from terraseg.infer.backends import ArrayBackend, TorchBackend

    if bundle.manifest.baseline is not None:
        return ArrayBackend(bundle.model)
    rt = choose_runtime(bundle, device, options.backend, options.precision, options.channels_last, window, batch_size)
    log.debug("runtime for %s: %s", bundle.manifest.name, rt)
    run: Any
    if rt.backend in ("onnx", "onnx-int8"):
        from terraseg.infer.onnx import onnx_backend_for

        run = ArrayBackend(onnx_backend_for(bundle, options.threads, device, int8=rt.backend == "onnx-int8"))
    else:
        run = TorchBackend(bundle.model, device=device, precision=rt.precision, channels_last=rt.channels_last,
                           temperature=float(bundle.manifest.calibration.get("temperature", 1.0)))
    run.runtime = rt
    return run


def _ranked(bundle: Any, candidates: list[Runtime], window: int, batch_size: int) -> Runtime:
    m = bundle.manifest
    key = "|".join([cpu_model(), str(os.cpu_count()), torch.__version__, m.model.arch, str(m.model.encoder),
                    str(m.input.bands), str(len(m.classes)), str(window), str(batch_size),
                    ",".join(f"{c.backend}:{c.precision}" for c in candidates)])
    from terraseg.io import cachefile

    best = cachefile.read_json(CACHE).get(key)
    if isinstance(best, dict) and isinstance(best.get("times"), dict):  # a damaged entry is measured again
        for c in candidates:
            if f"{c.backend}:{c.precision}" == best.get("choice"):
                return Runtime(c.backend, c.precision, c.channels_last, f"measured ranking (cached): {best['times']}")
    from terraseg.infer.backends import ArrayBackend, TorchBackend

    x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch_size, m.input.bands, window, window)).astype(np.float32))
    runs: dict[str, Any] = {}
    for c in candidates:
        if c.backend == "onnx":
            from terraseg.infer.onnx import onnx_backend_for

            runs[f"{c.backend}:{c.precision}"] = ArrayBackend(onnx_backend_for(bundle))
        else:  # the candidates share the model (PyTorch converts its layout in place): same layout for all
            runs[f"{c.backend}:{c.precision}"] = TorchBackend(bundle.model, "cpu", c.precision, c.channels_last)
    times = _measure(runs, x)
    if any(c.channels_last for c in candidates):  # the ranking ran the model in NHWC; give it back in NCHW
        bundle.model.to(memory_format=torch.contiguous_format)
    # the first candidate (the feature-based favourite) keeps its place unless another is at least 5% faster:
    # near-ties are noise, and a noisy choice would be cached
    first = next(iter(times))
    fastest = min(times, key=times.get)  # type: ignore[arg-type]
    choice = fastest if times[fastest] < 0.95 * times[first] else first
    cachefile.update_json(CACHE, key, {"choice": choice, "times": times})
    log.info("runtime ranking on %s: %s -> %s", cpu_model(), times, choice)
    best = next(c for c in candidates if f"{c.backend}:{c.precision}" == choice)
    return Runtime(best.backend, best.precision, best.channels_last, f"measured ranking: {times}")


__all__ = ["Runtime", "choose_runtime"]
