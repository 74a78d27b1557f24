"""Models served by the API: bundles loaded from files or an MLflow registry, each with its predictor.

A model reference is a bundle path (``runs/x/model.terraseg``) or an MLflow model URI
``models:/<name>/<version or alias>`` (``models:/buildings@champion`` works too). A registered
version's source is the run's ``model.terraseg`` artifact (``terraseg register`` creates it), which
is downloaded with ``mlflow.artifacts.download_artifacts``; the bundle is then loaded as any file.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from terraseg.bundle import Bundle
from terraseg.config.inference import InferenceConfig
from terraseg.errors import ConfigError
from terraseg.infer.backends import BatchingBackend, best_batch_pixels
from terraseg.serve.errors import ServerBusy
from terraseg.tasks import Task, task_for
from terraseg.tracking import resolve_model_uri

T = TypeVar("T")


@dataclass
class ServedModel:
    """One served bundle: its task, its inference object and the threads that run it.

    PyTorch and ONNX Runtime already use every core for one batch, so requests are queued and run one
    at a time. They run on a single dedicated thread rather than on whichever request thread holds a
    lock: glibc gives each thread its own malloc arena, and activations allocated from 16 different
    threads grew the server by ~240 MB in a 60 s soak; one thread keeps memory flat. With micro-batching
    (the default on CUDA) requests run on several threads while every forward pass still runs on the
    :class:`terraseg.infer.backends.BatchingBackend`'s one thread, over the windows of all of them.
    """

    name: str
    source: str
    bundle: Bundle
    task: Task  # what the bundle does (terraseg.tasks): which route answers an upload, how many windows it costs
    predictor: Any  # the task's inference object (Task.inference): a SlidingWindowPredictor or an ImageClassifier
    backend: str
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="terraseg-infer"))
    seconds_per_window: float | None = None  # measured at start-up (networks)
    max_queue: int = 32  # requests waiting or running before new ones get 503
    max_seconds: float | None = None  # largest estimated compute time of one request
    on_drift: Callable[[str], None] | None = None  # called with the model name when an input drifts (metrics)
    remote: bool = False  # the network runs in other processes (Ray Serve replicas), not on this machine's cores
    _pending: int = 0
    _lock: Any = field(default_factory=lambda: __import__("threading").Lock())

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the model's inference thread and wait for its result (exceptions propagate).

        Raises:
            ServerBusy: ``max_queue`` requests are already waiting or running.
        """
        return self.run_beside(fn, args)[0]

    def run_beside(self, fn: Callable[..., T], args: tuple = (), beside: Callable[[], Any] | None = None) -> tuple[T, Any]:
        """Run ``fn(*args)`` on the model's inference thread and ``beside()`` on this one (e.g. the input-drift check):
        ``(fn's result, beside's result)``. When the network runs elsewhere (:attr:`network_elsewhere`) ``beside`` runs
        meanwhile and costs no latency; on the CPU it runs first, as the network's threads already use every core.

        Args:
            fn: the inference call.
            args: its arguments.
            beside: work for the waiting request thread, or None.

        Raises:
            ServerBusy: ``max_queue`` requests are already waiting or running. Whatever ``fn`` or ``beside`` raises.
        """
        with self._lock:
            if self._pending >= self.max_queue:
                raise ServerBusy(self.name, self._pending, self.estimated_wait())
            self._pending += 1
        try:
            if beside is not None and not self.network_elsewhere:
                # the network's threads already use every core: work beside it would only slow it (3 ms more per 512^2
                # request on a 2-core CPU, measured), so the side work runs first
                other = beside()
                return self.executor.submit(fn, *args).result(), other
            future = self.executor.submit(fn, *args)
            try:
                other = beside() if beside is not None else None
            finally:
                result = future.result()
            return result, other
        finally:
            with self._lock:
                self._pending -= 1

    @property
    def network_elsewhere(self) -> bool:
        """Whether the network runs off this machine's CPU cores (a GPU, or Ray Serve replicas)."""
        device = getattr(self.predictor, "device", None)
        return self.remote or (device is not None and getattr(device, "type", "cpu") != "cpu")

    def estimated_seconds(self, height: int, width: int) -> float | None:
        """Estimated compute seconds for a ``height x width`` image (windows x the measured time per window), or None."""
        if self.seconds_per_window is None:
            return None
        return self.task.windows(self.predictor, height, width) * self.seconds_per_window

    def estimated_wait(self) -> int:
        """Seconds a client should wait before retrying (Retry-After), at least 1."""
        per = self.seconds_per_window or 0.5
        return max(1, int(round(self._pending * per)))

    def info(self) -> dict[str, Any]:
        """Public description for ``GET /v1/models``."""
        m = self.bundle.manifest
        val = {k: v for k, v in m.metrics.get("validation", {}).items() if k != "per_class"}
        return {
            "name": self.name,
            "version": m.terraseg_version,
            "created": m.created,
            "task": m.task,
            "backend": self.backend,
            "source": self.source if self.source.startswith("models:/") else Path(self.source).name,  # never a server path
            "bands": m.input.bands,
            "band_names": m.input.band_names,
            "dtype": m.input.dtype,
            "window": self.task.input_size(self.bundle),
            "train_window": m.input.train_window,
            "classes": [c.model_dump() for c in m.classes],
            "metrics": val,
            "architecture": m.model.arch if m.baseline is not None else f"{m.model.arch}/{m.model.encoder}",
            "batching": self.batching(),
        }

    def batching(self) -> dict[str, Any] | None:
        """Micro-batching of this model: ``wait_ms``, ``max_windows``, ``max_pixels`` (the measured cap, or None) and the
        prediction ``window``; None when requests are not batched."""
        batcher = getattr(self.predictor, "backend", None)
        if not isinstance(batcher, BatchingBackend):
            return None
        return {
            "wait_ms": batcher.wait * 1000.0,
            "max_windows": batcher.max_batch,
            "max_pixels": batcher.max_pixels,
            "window": self.predictor.window,
        }


def load_models(
    refs: list[str],
    inference: InferenceConfig | None = None,
    tracking_uri: str | None = None,
    batch_wait_ms: float | None = None,
    max_batch: int = 16,
    engine: str = "local",
    ray: Any = None,
) -> dict[str, ServedModel]:
    """Load every referenced bundle; names are the bundles' names (deduplicated with a suffix).

    Args:
        refs: bundle paths or ``models:/`` URIs.
        inference: window, backend and TTA options of every model's inference object (:meth:`terraseg.tasks.Task.inference`).
        tracking_uri: MLflow registry.
        batch_wait_ms: micro-batching wait (None: 5 ms; 0: off); with batching, requests
            run on several threads and their windows share forward passes.
        max_batch: most windows per shared pass; passes are also capped at the pixel count measured
            fastest on this machine (:func:`terraseg.infer.backends.best_batch_pixels`).
        engine: 'local', or 'ray': each network runs as a Ray Serve deployment
            (:mod:`terraseg.serve.ray_backend`); ``ray`` is its :class:`terraseg.config.inference.RayConfig`.

    Returns:
        ``{name: ServedModel}`` in the order given.

    Raises:
        BundleError: an unloadable bundle or registry reference.
        ConfigError: no model given.
    """
    inference = inference or InferenceConfig()
    if not refs:
        raise ConfigError("give at least one bundle path or models:/ URI to serve.")
    wait = 5.0 if batch_wait_ms is None else batch_wait_ms  # measured: docs/benchmarks.md (serve_bench)
    models: dict[str, ServedModel] = {}
    for ref in refs:
        path = resolve_model_uri(ref, tracking_uri)
        b = Bundle.load(path)
        name = b.manifest.name
        k = 2
        while name in models:
            name, k = f"{b.manifest.name}-{k}", k + 1
        task = task_for(b)
        if engine == "ray" and b.manifest.baseline is None:
            models[name] = _ray_model(name, ref, path, b, task, inference, ray, max_batch, wait)
            continue
        pred = task.inference(b, inference)
        rt = getattr(pred.backend, "runtime", None)
        network = b.manifest.baseline is None  # a pixel model has nothing to tune or warm up
        cap, seconds = (
            best_batch_pixels(pred.backend, b.in_channels, pred.window, max_batch)  # also the warm-up
            if network and wait > 0
            else (None, {})
        )
        spw = (
            seconds[pred.batch_size] / pred.batch_size
            if pred.batch_size in seconds
            else _warm_up(pred, b.in_channels)
            if network
            else None
        )
        threads = 1
        batcher = None
        if wait > 0:
            pred.backend = batcher = BatchingBackend(pred.backend, max_batch, wait, max_pixels=cap)
            # enough concurrent requests to fill a shared pass: a scene brings a batch of windows, an image one input
            per_request = max(pred.batch_size, 1) if task.dense else 1
            threads = max(2, 2 * batcher.windows_per_pass(pred.window, pred.window) // per_request)
        models[name] = ServedModel(
            name,
            ref,
            b,
            task,
            pred,
            rt.backend if rt else inference.backend,
            ThreadPoolExecutor(threads, thread_name_prefix="terraseg-infer"),
            spw,
        )
        if batcher is not None:  # a lone request does not wait for company
            batcher.in_flight = lambda m=models[name]: m._pending
    return models


def _ray_model(
    name: str,
    ref: str,
    path: Path,
    b: Bundle,
    task: Task,
    inference: InferenceConfig,
    ray: Any,
    max_batch: int = 16,
    wait_ms: float = 5.0,
) -> ServedModel:
    """A served model whose network is a Ray Serve deployment; the gateway keeps reading, tiling and blending."""
    from terraseg.config.inference import RayConfig
    from terraseg.prediction.distributed import connect
    from terraseg.serve.ray_backend import deploy

    ray = ray or RayConfig()
    connect(ray.address)
    backend = deploy(name, Path(path).read_bytes(), inference.model_dump(mode="json"), ray, max_batch, wait_ms)
    pred = task.inference(b, inference, backend)
    spw = _warm_up(pred, b.in_channels)
    threads = 2 * (ray.max_replicas or ray.replicas)  # requests in flight to keep every replica busy
    return ServedModel(
        name,
        ref,
        b,
        task,
        pred,
        f"ray-serve:{backend.info['backend']}",
        ThreadPoolExecutor(threads, thread_name_prefix="terraseg-infer"),
        spw,
        remote=True,
    )


def _warm_up(pred, bands: int) -> float:
    """Forward passes on windows of the prediction size before the server reports ready.

    The first pass of a process pays CUDA context creation, cuDNN autotuning or oneDNN primitive
    creation: 7 s for the first request to a fresh worker on an H100, measured, which a user's
    request must not wait for. A second, timed pass gives the seconds per window used to refuse
    requests over the time budget (``ServeConfig.max_seconds``).

    Returns:
        Seconds per window (batch time / batch size).
    """
    import time

    import torch

    x = torch.zeros(pred.batch_size, bands, pred.window, pred.window, device=pred.device)
    sync = torch.cuda.synchronize if pred.device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        pred.backend.probabilities(x)
        if pred.batch_size > 1:
            pred.backend.probabilities(x[:1])  # the single-upload shape
        sync()
        t0 = time.perf_counter()
        pred.backend.probabilities(x)
        sync()
    return (time.perf_counter() - t0) / pred.batch_size
