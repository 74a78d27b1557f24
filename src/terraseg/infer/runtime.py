"""Choosing how a network runs on this machine: backend, precision and memory layout, by measurement.

The fastest correct path differs by machine and by network: on an AVX-512 BF16 Xeon, bf16 ran a ResNet
U-Net 2.8x faster than float32 and an EfficientNet-Lite0 U-Net 1.2x slower; on an AVX2 EPYC ONNX Runtime
was 3x PyTorch. So on a CPU the choice is measured, the first time a bundle runs on a machine:

1. **Candidates**: PyTorch float32 in NHWC (channels_last) and NCHW; PyTorch bf16 autocast where the CPU
   computes bf16 natively (AVX-512 BF16, AMX); ONNX Runtime on the bundle's graph, or on a graph exported
   on demand into the cache folder when the bundle has none; its INT8 graph where the bundle has one.
   Explicit ``backend`` / ``precision`` / ``channels_last`` options narrow the candidates.
2. **Correct**: each candidate's classes are compared with PyTorch float32's on real windows (the raw
   training windows the bundle keeps, normalised; random inputs for older bundles); a candidate
   changing the class of more than :data:`MAX_DISAGREEMENT` of the pixels is left out.
3. **Fastest**: each remaining candidate runs a batch of the actual window size (one warm-up each, then
   interleaved rounds; the median); the fastest wins.

The decision is cached in ``runtime.json`` of the cache folder (``$TERRASEG_CACHE``, default the user's
cache folder: :func:`terraseg.settings.cache_dir`), keyed by the bundle's weights, the CPU model and
flags, the window and batch, and the torch and ONNX Runtime versions; a damaged entry is measured
again. ``terraseg info BUNDLE --backends`` prints the table. On CUDA, PyTorch with bf16 (fp16 where
bf16 is missing: :func:`terraseg.devices.training_precision`) and channels_last is the standard fast path.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from terraseg.devices import cpu_flags, cpu_model, inference_precision, native_bf16, training_precision

log = logging.getLogger(__name__)
CACHE = "runtime.json"  # the measured rankings, in the cache folder (terraseg.io.cachefile)
MAX_DISAGREEMENT = 0.01  # share of pixels whose class may differ from PyTorch float32 (as INT8 export allows)


@dataclass(frozen=True)
class Runtime:
    """How a network runs.

    Attributes:
        backend: 'torch', 'onnx' or 'onnx-int8'.
        precision: '32', 'bf16', '16' or 'int8'.
        channels_last: NHWC layout.
        reason: why this was chosen (detected features, measured ranking or explicit options).
        table: the measured candidates, ``{name: {"seconds", "disagreement", "correct"}}`` (None without a ranking).
    """

    backend: str
    precision: str
    channels_last: bool
    reason: str = ""
    table: dict | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """``backend:precision:layout``, the candidate's name in rankings (e.g. ``torch:bf16:nhwc``)."""
        return f"{self.backend}:{self.precision}:{'nhwc' if self.channels_last else 'nchw'}"


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


def cpu_candidates(
    bundle: Any, backend: str = "auto", precision: str = "auto", channels_last: bool | None = None
) -> list[Runtime]:
    """The correct-by-construction ways to run ``bundle`` on this CPU that the options allow, the reference first.

    Args:
        bundle: the loaded bundle.
        backend: the options ('auto' / None: any).
        precision: the options ('auto' / None: any).
        channels_last: the options ('auto' / None: any).
    """
    from terraseg.bundle import ONNX_INT8

    out: list[Runtime] = []
    layouts = [channels_last] if channels_last is not None else [True, False]
    if backend in ("auto", "torch"):
        for cl in layouts:
            if precision in ("auto", "32"):
                out.append(Runtime("torch", "32", cl, "float32"))
        if native_bf16("cpu") and precision in ("auto", "bf16"):
            out += [Runtime("torch", "bf16", cl, "CPU has native bf16") for cl in layouts]
    if backend in ("auto", "onnx") and precision in ("auto", "32") and _onnx_available():
        out.append(Runtime("onnx", "32", False, "ONNX Runtime"))
    if backend in ("auto", "onnx-int8") and ONNX_INT8 in bundle.extras and _onnx_available():
        out.append(Runtime("onnx-int8", "int8", False, "the bundle's INT8 graph"))
    return out


def choose_runtime(
    bundle: Any,
    device: str = "cpu",
    backend: str = "auto",
    precision: str = "auto",
    channels_last: bool | None = None,
    window: int = 256,
    batch_size: int = 4,
    measure: bool = True,
    remeasure: bool = False,
) -> Runtime:
    """Pick backend, precision and layout for a bundle on this machine (see module doc).

    Args:
        bundle: a loaded :class:`terraseg.bundle.Bundle` (its network and optional ONNX graphs).
        device: 'cpu' or a CUDA device.
        backend: 'auto', 'torch', 'onnx' or 'onnx-int8'.
        precision: 'auto', '32', 'bf16' or '16'.
        channels_last: None for automatic.
        window: window side (pixels) of the measured batch.
        batch_size: windows per measured batch.
        measure: rank several CPU candidates by timing them (else the first candidate).
        remeasure: measure again even when the cache holds a decision.

    Returns:
        The chosen :class:`Runtime` (``table``: the measured candidates, when ranked).
    """
    cl = True if channels_last is None else channels_last
    if backend == "onnx-int8":
        return Runtime("onnx-int8", "int8", False, "explicit options")
    if backend != "auto" and precision != "auto" and channels_last is not None:
        return Runtime(backend, precision, cl if backend == "torch" else False, "explicit options")
    if bundle.manifest.baseline is not None:
        return Runtime("torch", "32" if precision == "auto" else precision, cl, "a pixel baseline")
    if device.startswith("cuda"):
        p = precision if precision != "auto" else inference_precision(training_precision(device))
        return Runtime("torch" if backend == "auto" else backend, p, cl, f"CUDA: {'native bf16' if p == 'bf16' else 'fp16'}")
    candidates = cpu_candidates(bundle, backend, precision, channels_last)
    if not candidates:
        return Runtime("torch" if backend == "auto" else backend, "32" if precision == "auto" else precision, cl, "fallback")
    if len(candidates) == 1 or not measure:
        return candidates[0]
    return _ranked(bundle, candidates, window, batch_size, remeasure)


def backend_for(bundle: Any, options: Any, device: str, window: int, batch_size: int) -> Any:
    """The backend that runs a bundle's network for segmentation and classification alike.

    A pixel baseline runs its scikit-learn model; a network runs on the runtime :func:`choose_runtime`
    picks for this machine (or the one asked for): PyTorch in float32 or bf16/fp16 autocast, or the
    bundle's ONNX graph (float32 or INT8) in ONNX Runtime.

    Args:
        bundle: the loaded bundle.
        options: :class:`terraseg.config.inference.InferenceConfig` (backend, precision, layout, threads).
        device: the resolved device.
        window: input side in pixels (the measured batch).
        batch_size: inputs per forward pass.

    Returns:
        A backend (:mod:`terraseg.infer.backends`) with ``runtime`` set for networks.

    Raises:
        BundleError: 'onnx' asked for a network that does not export, or 'onnx-int8' for a bundle without an INT8 graph.
    """
    from terraseg.infer.backends import ArrayBackend, TorchBackend

    if bundle.manifest.baseline is not None:
        return ArrayBackend(bundle.model)
    rt = choose_runtime(bundle, device, options.backend, options.precision, options.channels_last, window, batch_size)
    log.debug("runtime for %s: %s", bundle.manifest.name, rt)
    run: Any
    if rt.backend in ("onnx", "onnx-int8"):
        from terraseg.infer.onnx import onnx_backend_for

        if rt.backend == "onnx":
            ensure_onnx_graph(bundle)  # a bundle without a graph: one from the cache, or exported now into it

        run = ArrayBackend(onnx_backend_for(bundle, options.threads, device, int8=rt.backend == "onnx-int8"))
    else:
        run = TorchBackend(
            bundle.model,
            device=device,
            precision=rt.precision,
            channels_last=rt.channels_last,
            temperature=float(bundle.manifest.calibration.get("temperature", 1.0)),
        )
    run.runtime = rt
    return run


def weights_key(bundle: Any) -> str:
    """A short digest of a bundle's weights and input spec: cache entries of one bundle, never of another.

    Args:
        bundle: the loaded bundle.
    """
    cached = getattr(bundle, "_weights_key", None)  # hashing the weights once per loaded bundle, not per predictor
    if cached is not None:
        return cached
    h = hashlib.sha1()
    for k, v in bundle.model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(repr(bundle.manifest.input).encode())
    bundle._weights_key = h.hexdigest()[:16]
    return bundle._weights_key


def shape_key(bundle: Any) -> str:
    """A short digest of a network's shapes (parameter names, shapes, dtypes) and input spec, not its values: what its
    speed depends on, so one measurement serves every network of that shape (retraining, folds, tuning trials).

    Args:
        bundle: the loaded bundle.
    """
    h = hashlib.sha1()
    for k, v in bundle.model.state_dict().items():
        h.update(f"{k}:{tuple(v.shape)}:{v.dtype}".encode())
    h.update(repr(bundle.manifest.input).encode())
    return h.hexdigest()[:16]


def _onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def ensure_onnx_graph(bundle: Any) -> bool:
    """Give a bundle without an ONNX graph one: from the cache folder, else exported now and cached (in memory only;
    the bundle file is not changed). False when the network does not export.

    Args:
        bundle: the loaded bundle (its ``extras`` gain ``model.onnx``).
    """
    from terraseg.bundle import ONNX
    from terraseg.errors import BundleError
    from terraseg.io import cachefile

    if ONNX in bundle.extras:
        return True
    name = f"onnx/{weights_key(bundle)}.onnx"
    data = cachefile.read_blob(name)
    if data is not None:
        bundle.extras[ONNX] = data
        return True
    from terraseg.infer.onnx import add_onnx_graph

    try:
        t0 = time.perf_counter()
        add_onnx_graph(bundle)
    except (BundleError, ImportError) as e:
        log.info("no ONNX graph for %s: %s", bundle.manifest.name, e)
        return False
    cachefile.write_blob(name, bundle.extras[ONNX])
    log.info("exported an ONNX graph of %s on demand in %.1f s (cached)", bundle.manifest.name, time.perf_counter() - t0)
    return True


def _inputs(bundle: Any, window: int, batch_size: int) -> torch.Tensor:
    m = bundle.manifest
    side = m.input.input_size or window  # a classifier's images are resized to its input size
    return torch.from_numpy(np.random.default_rng(0).standard_normal((batch_size, m.input.bands, side, side)).astype(np.float32))


def _check_batch(bundle: Any, window: int, batch_size: int) -> torch.Tensor:
    """Normalised windows to compare classes on: the bundle's raw training windows when it keeps them, else random."""
    import io

    from terraseg.bundle import CALIBRATION
    from terraseg.data.normalize import normalize

    raw = bundle.extras.get(CALIBRATION)
    if raw is not None and bundle.manifest.task == "segmentation":
        x = np.load(io.BytesIO(raw), allow_pickle=False)
        if x.ndim == 4 and x.shape[1] == bundle.manifest.input.bands and x.shape[2] % 32 == 0 and x.shape[3] % 32 == 0:
            return torch.from_numpy(np.stack([normalize(w, bundle.stats) for w in x[:8]]).astype(np.float32))
    return _inputs(bundle, window, batch_size)


def _runs(bundle: Any, candidates: list[Runtime]) -> dict[str, Any]:
    """A backend per candidate; NHWC PyTorch candidates get their own copy of the network (layouts convert in place)."""
    from terraseg.infer.backends import ArrayBackend, TorchBackend
    from terraseg.infer.onnx import onnx_backend_for

    runs: dict[str, Any] = {}
    for c in candidates:
        if c.backend.startswith("onnx"):
            runs[c.name] = ArrayBackend(onnx_backend_for(bundle, int8=c.backend == "onnx-int8"))
        else:
            model = copy.deepcopy(bundle.model) if c.channels_last else bundle.model
            runs[c.name] = TorchBackend(model, "cpu", c.precision, c.channels_last)
    return runs


def rank_candidates(
    bundle: Any, candidates: list[Runtime], window: int, batch_size: int, known: dict[str, float | None] | None = None
) -> dict[str, dict[str, Any]]:
    """Measure each candidate: classes against PyTorch float32 NCHW on real windows, then seconds per batch.

    Args:
        bundle: the loaded bundle.
        candidates: from :func:`cpu_candidates`.
        window: the measured batch.
        batch_size: the measured batch.
        known: seconds per candidate measured before on a network of the same shapes on this machine (speed does not
            depend on the weights' values): nothing is timed, and classes are checked fastest first until one passes.

    Returns:
        ``{name: {"seconds": s or None, "disagreement": share of pixels or None (not checked), "correct": bool or None}}``.
    """
    if known is not None:  # fastest first
        candidates = sorted(candidates, key=lambda c: float("inf") if (s := known.get(c.name)) is None else s)
    reference = Runtime("torch", "32", False)
    check = _check_batch(bundle, window, batch_size)
    table: dict[str, dict[str, Any]] = {}
    with torch.inference_mode():
        ref = _runs(bundle, [reference])[reference.name].probabilities(check).argmax(1).cpu()
        runs: dict[str, Any] = {}
        for c in candidates:
            if known is not None and any(v["correct"] for v in table.values()):
                table[c.name] = {"seconds": known.get(c.name), "disagreement": None, "correct": None}
                continue
            if c.backend == "onnx" and not ensure_onnx_graph(bundle):
                continue
            runs[c.name] = _runs(bundle, [c])[c.name]
            share = float((runs[c.name].probabilities(check).argmax(1).cpu() != ref).float().mean())
            ok = share <= MAX_DISAGREEMENT
            table[c.name] = {
                "seconds": known.get(c.name) if known and ok else None,
                "disagreement": round(share, 5),
                "correct": ok,
            }
    if known is None:
        times = _measure({k: r for k, r in runs.items() if table[k]["correct"]}, _inputs(bundle, window, batch_size))
        for k, v in times.items():
            table[k]["seconds"] = v
    bundle.model.to(memory_format=torch.contiguous_format)
    return table


def _ranked(bundle: Any, candidates: list[Runtime], window: int, batch_size: int, remeasure: bool = False) -> Runtime:
    """The cached decision for these weights, else a ranking: timed once per network shape on this machine (the seconds
    are cached apart from the weights), classes checked for every set of weights."""
    from terraseg.io import cachefile

    ort = "-"
    if _onnx_available():
        import onnxruntime

        ort = onnxruntime.__version__
    flags = hashlib.sha1(",".join(sorted(cpu_flags())).encode()).hexdigest()[:8]
    machine = [cpu_model(), flags, str(os.cpu_count()), torch.__version__, ort, str(window), str(batch_size)]
    names = ",".join(c.name for c in candidates)
    key = "|".join([weights_key(bundle), *machine, names])
    speed_key = "|".join(["seconds", shape_key(bundle), *machine, names])
    cached = {} if remeasure else cachefile.read_json(CACHE)
    entry = cached.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("table"), dict):  # a damaged entry is measured again
        for c in candidates:
            if c.name == entry.get("choice"):
                if c.backend == "onnx" and not ensure_onnx_graph(bundle):
                    break
                return Runtime(c.backend, c.precision, c.channels_last, "measured ranking (cached)", entry["table"])
    known = cached.get(speed_key)
    known = known if isinstance(known, dict) and set(known) == {c.name for c in candidates} else None
    table = rank_candidates(bundle, candidates, window, batch_size, known)
    timed = {k: v["seconds"] for k, v in table.items() if v["seconds"] is not None and v["correct"]}
    choice = min(timed, key=timed.get) if timed else candidates[0].name  # type: ignore[arg-type]
    cachefile.update_json(CACHE, key, {"choice": choice, "table": table})
    if known is None:
        cachefile.update_json(
            CACHE,
            speed_key,
            {k: v["seconds"] for k, v in table.items()} | {c.name: None for c in candidates if c.name not in table},
        )
    log.info("runtime ranking on %s: %s -> %s", cpu_model(), table, choice)
    best = next(c for c in candidates if c.name == choice)
    reason = "measured ranking" + (" (seconds of this network's shape, cached)" if known is not None else "")
    return Runtime(best.backend, best.precision, best.channels_last, reason, table)


__all__ = [
    "MAX_DISAGREEMENT",
    "Runtime",
    "choose_runtime",
    "cpu_candidates",
    "ensure_onnx_graph",
    "rank_candidates",
    "shape_key",
    "weights_key",
]
