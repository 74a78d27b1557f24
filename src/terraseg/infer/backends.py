"""Inference backends: what runs the network on a batch of normalised windows.

Every backend maps ``(N, C, h, w)`` float32 windows to ``(N, K, h, w)`` float32 class probabilities.
:meth:`probabilities` takes and returns torch tensors (the sliding-window predictor keeps its
work on the backend's :attr:`device`); ``__call__`` takes and returns NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from terraseg.devices import autocast_dtype
from terraseg.models.factory import logits_to_probs


class TorchBackend:
    """Runs a PyTorch network on its device: ``(N, C, h, w)`` float32 -> ``(N, K, h, w)`` float32 probabilities.

    Tensors given to :meth:`probabilities` stay on the device (the predictor normalises, blends and
    takes the argmax there); ``__call__`` takes and returns NumPy arrays.

    Args:
        model: network returning logits.
        device: 'cpu', 'cuda', 'cuda:1'...
        precision: '32', or 'bf16' / '16' for autocast.
        channels_last: NHWC memory format.
        temperature: divides the logits before softmax / sigmoid (the bundle's calibration; 1: none).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str = "cpu",
        precision: str = "32",
        channels_last: bool = False,
        temperature: float = 1.0,
    ) -> None:
        self.device = torch.device(device)
        self.temperature = float(temperature)  # temperature scaling (terraseg.training.calibrate); 1: none
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # autotune convolutions once per window shape
        self.model = model.eval().to(self.device)
        self.precision = precision
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)`` normalised float32 on any device -> ``(N, K, h, w)`` float32 on :attr:`device`."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = autocast_dtype(self.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            logits = self.model(x)
        return logits_to_probs(logits.float() / self.temperature if self.temperature != 1.0 else logits)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.probabilities(torch.from_numpy(batch)).cpu().numpy()


class ArrayBackend:
    """Adapts a NumPy backend (ONNX Runtime, a scikit-learn pixel model) to tensors on the CPU.

    Args:
        run: callable ``(N, C, h, w)`` float32 array -> ``(N, K, h, w)`` probabilities.
    """

    device = torch.device("cpu")

    def __init__(self, run: Callable[[np.ndarray], np.ndarray]) -> None:
        self.run = run

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)`` float32 tensor -> ``(N, K, h, w)`` float32 tensor on the CPU."""
        return torch.from_numpy(np.ascontiguousarray(self.run(x.cpu().numpy()), dtype=np.float32))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run(batch)


class TTABackend:
    """Test-time augmentation: the mean of the probabilities of transformed copies, each transformed back.

    ``flips``: identity, horizontal and vertical flips (3 passes); ``d4``: the eight symmetries of the
    square (rotations by 90 degrees, with and without a flip; 8 passes; square windows only, else
    flips). Averaging over symmetric views is the usual remote-sensing TTA (e.g. the D4 averaging
    of the SpaceNet and Inria building challenge solutions).

    Args:
        backend: the wrapped backend (``probabilities`` on tensors).
        mode: 'flips' or 'd4'.
    """

    def __init__(self, backend, mode: str = "d4") -> None:
        if mode not in ("flips", "d4"):
            raise ValueError(f"unknown test-time augmentation '{mode}'")
        self.backend, self.mode = backend, mode
        self.device = getattr(backend, "device", torch.device("cpu"))

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)`` -> the mean over the views: ``(N, K, h, w)`` maps, each brought back to the input's frame,
        or ``(N, K)`` scene-class probabilities (a classifier's output has no frame to bring back)."""
        from terraseg.data import d4

        x = x.to(self.device)
        views = d4.views(self.mode, x.shape[-1] == x.shape[-2])
        total = torch.zeros(())
        for i, view in enumerate(views):
            p = self.backend.probabilities(d4.apply(x, view).contiguous()).to(self.device)
            p = d4.invert(p, view) if p.ndim == 4 else p
            total = p if i == 0 else total + p
        return total / len(views)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.probabilities(torch.from_numpy(batch)).cpu().numpy()


class BatchingBackend:
    """Runs the windows of concurrent callers in shared forward passes (micro-batching for a server).

    Each caller's :meth:`probabilities` puts its batch in a queue and waits; one worker thread takes
    what has arrived within ``wait_ms`` of the first request (up to ``max_batch`` windows of one
    shape), runs one forward pass over all of it and hands each caller its slice. Under load the
    device then sees full batches instead of one request's few windows; alone, a request waits at
    most ``wait_ms``. The forward always runs on the one worker thread (activations are allocated by
    one thread, which keeps a long-running server's memory flat).

    With ``in_flight`` (the number of requests the server holds for this model), the wait is only spent when
    more requests are in flight than have reached the batcher: a lone request runs at once, without the wait.

    With ``max_pixels``, a pass also holds at most that many pixels (windows x height x width; one caller's
    windows always run, however many): on a CPU a larger batch can be slower per pixel once it outgrows the
    caches, so the server measures the best batch (:func:`best_batch_pixels`) and caps passes there.

    Args:
        backend: the wrapped backend (``probabilities`` on tensors).
        max_batch: most windows per forward pass.
        wait_ms: how long the first request waits for company.
        in_flight: returns how many requests are being served for this model (decoding, waiting or running), or None
            (always wait).
        max_pixels: most pixels per forward pass, or None (windows only).
    """

    def __init__(self, backend, max_batch: int = 16, wait_ms: float = 5.0, in_flight=None, max_pixels: int | None = None) -> None:
        import queue
        import threading

        self.backend, self.max_batch, self.wait = backend, max_batch, wait_ms / 1000.0
        self.in_flight = in_flight
        self.max_pixels = max_pixels
        self.device = getattr(backend, "device", torch.device("cpu"))
        self.runtime = getattr(backend, "runtime", None)
        self._queue: queue.Queue = queue.Queue()
        self.forwards = 0  # forward passes run (for tests and benchmarks)
        self._worker = threading.Thread(target=self._serve, name="terraseg-batcher", daemon=True)
        self._worker.start()

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)`` normalised float32 -> ``(N, K, h, w)`` probabilities, computed with other callers' windows.

        Raises:
            Whatever the wrapped backend raises for the shared batch.
        """
        from concurrent.futures import Future

        done: Future = Future()
        self._queue.put((x, done))
        return done.result()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.probabilities(torch.from_numpy(batch)).cpu().numpy()

    def windows_per_pass(self, height: int, width: int) -> int:
        """Most windows of ``height x width`` pixels one shared pass takes: ``max_batch``, capped by ``max_pixels``."""
        if self.max_pixels is None:
            return self.max_batch
        return max(1, min(self.max_batch, self.max_pixels // (height * width)))

    def _serve(self) -> None:
        import queue
        import time

        pending: list = []
        while True:
            if not pending:
                pending.append(self._queue.get())
            deadline = time.monotonic() + self.wait
            shape = pending[0][0].shape[1:]
            most = self.windows_per_pass(int(shape[-2]), int(shape[-1]))
            group = [p for p in pending if p[0].shape[1:] == shape]
            while (
                sum(len(p[0]) for p in group) < most
                and (left := deadline - time.monotonic()) > 0
                and (self.in_flight is None or self.in_flight() > len(pending))
            ):  # others are coming: wait for them
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                pending.append(item)
                if item[0].shape[1:] == shape:
                    group.append(item)
            take: list = []
            n = 0
            for p in group:
                if take and n + len(p[0]) > most:
                    break
                take.append(p)
                n += len(p[0])
            pending = [p for p in pending if all(p is not t for t in take)]
            try:
                out = self.backend.probabilities(torch.cat([t[0].to(self.device) for t in take]))
                self.forwards += 1
                i = 0
                for x, fut in take:
                    fut.set_result(out[i : i + len(x)])
                    i += len(x)
            except BaseException as e:  # every waiting caller gets the error
                for _, fut in take:
                    if not fut.done():
                        fut.set_exception(e)


def best_batch_pixels(
    backend, bands: int, window: int, max_batch: int, reps: int = 2, stop_below: float | None = 0.9
) -> tuple[int | None, dict[int, float]]:
    """The pixels per forward pass at which ``backend`` computes the most pixels per second, measured here.

    Times passes over ``(n, bands, window, window)`` zeros for n = 1, 2, 4, ... up to ``max_batch`` (after one
    untimed pass per size: oneDNN and cuDNN build their kernels on first use), and stops early once a size
    computes under ``stop_below`` of the best rate so far (the rate rises, then falls: larger sizes would only
    lengthen the server's start-up). On a GPU the rate usually
    grows up to the largest batch; on a CPU it can fall once a batch outgrows the caches (the demo's
    U-Net/EfficientNet-Lite0 on a 2-core AMD EPYC: 3.2 MP/s at 4 x 256^2, 2.5 MP/s at 16 x 256^2, 2.0 MP/s
    at 16 x 512^2; ``docs/benchmarks.md``).

    Args:
        backend: a backend with ``probabilities`` and ``device``.
        bands: input channels.
        window: side in pixels.
        max_batch: the largest batch tried.
        reps: timed passes per size (the fastest counts).
        stop_below: stop at a size whose rate is under this share of the best so far; None: time every size.

    Returns:
        ``(pixels per pass, or None when the largest batch was the fastest: no cap; {n: seconds per pass})``.
    """
    import time

    dev = getattr(backend, "device", torch.device("cpu"))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sizes = sorted({min(2**k, max_batch) for k in range(max_batch.bit_length() + 1)})
    seconds: dict[int, float] = {}
    with torch.inference_mode():
        for n in sizes:
            x = torch.zeros(n, bands, window, window, device=dev)
            backend.probabilities(x)
            sync()
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                backend.probabilities(x)
                sync()
                best = min(best, time.perf_counter() - t0)
            seconds[n] = best
            if stop_below is not None and n / best < stop_below * max(m / t for m, t in seconds.items()):
                break
    fastest = max(seconds, key=lambda n: n / seconds[n])
    return (None if fastest == sizes[-1] else fastest * window * window), seconds


__all__ = ["ArrayBackend", "BatchingBackend", "TTABackend", "best_batch_pixels", "TorchBackend"]
