"""Streaming sliding-window inference with smooth blending of overlaps, on the backend's device.

The scene is covered by tiles of ``window`` pixels (smaller scenes by one tile rounded up to a
multiple of 32, padded) at a stride of ``window * (1 - overlap)``; the last tile of each row and
column is shifted inside the scene, so no tile is mostly padding and no pixel is left out. Tile
probabilities are blended with a 2-D Hann window (as in geo-inference and Huang et al., "Tiling
and Stitching Segmentation Output for Remote Sensing", 2018), which removes the seams a plain
average leaves at tile borders.

Memory: tiles are processed one tile-row (strip) at a time; an accumulator of
``K x window x width`` floats (on the device) holds the overlapping rows, and each strip's finished
rows are handed to a callback (written to disk, or compared with labels) and dropped. Memory
depends on the scene width and the window, never on the scene height.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from terraseg.data.normalize import NormStats, normalize
from terraseg.data.scenes import Scene
from terraseg.data.windows import grid_offsets
from terraseg.errors import BundleError, ConfigError
from terraseg.infer.backends import ArrayBackend, TorchBackend, TTABackend
from terraseg.io.predictions import class_encoding

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from terraseg.config.inference import InferenceConfig


def hann_weights(h: int, w: int, floor: float = 1e-3) -> np.ndarray:
    """``(h, w)`` float32 2-D Hann window, ``sin^2(pi (i + 0.5) / n)``, floored at ``floor``.

    The floor keeps pixels at scene borders (covered by one tile edge only) well defined.

    Args:
        h: window height and width in pixels.
        w: window height and width in pixels.
        floor: smallest weight.

    Returns:
        ``(h, w)`` float32 weights in ``[floor, 1]``.
    """

    def hann(n: int) -> np.ndarray:
        return np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2

    return np.maximum(np.outer(hann(h), hann(w)), floor).astype(np.float32)


CONFIDENCE_BANDS = ("max_probability", "margin", "normalized_entropy")


def confidence_bands(probs: torch.Tensor) -> torch.Tensor:
    """Per-pixel confidence of ``(K, h, w)`` probabilities: ``(3, h, w)`` float32.

    Band 1: the largest class probability; band 2: its margin over the second (0 with one class);
    band 3: the Shannon entropy divided by ``log K`` (0 certain, 1 uniform). High max probability and
    margin, low entropy: a confident pixel (Settles, "Active Learning Literature Survey", 2009, 3.1).

    Args:
        probs: ``(K, h, w)`` probabilities summing to 1 over K, on any device.

    Returns:
        ``(3, h, w)`` float32 on the same device: max probability, margin, normalised entropy.
    """
    k = probs.shape[0]
    top = probs.topk(min(2, k), dim=0).values
    margin = top[0] - top[1] if k > 1 else torch.zeros_like(top[0])
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(0) / max(float(np.log(k)), 1e-12) if k > 1 else torch.zeros_like(top[0])
    return torch.stack([top[0], margin, entropy]).float()


def class_argmax(probs: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Index of the largest class score along ``dim`` (the first one on ties), as int64.

    For up to 16 classes this is a running comparison, one element-wise pass per class: PyTorch's
    CPU ``argmax`` over a leading class axis of a ``(K, H, W)`` tensor is a strided reduction that
    took 38 ms for a 2 x 512 x 512 block (the comparison: 3 ms).

    Args:
        probs: class scores with the class axis at ``dim`` (no NaN).
        dim: the class axis.

    Returns:
        int64 class ids, ``probs``'s shape without ``dim``.
    """
    k = probs.shape[dim]
    if k > 16:
        return probs.argmax(dim=dim)
    best = probs.select(dim, 0)
    ids = torch.zeros(best.shape, dtype=torch.int64, device=probs.device)
    for c in range(1, k):
        p = probs.select(dim, c)
        better = p > best
        best = torch.where(better, p, best)
        ids.masked_fill_(better, c)
    return ids


@dataclass
class Block:
    """Finished rows of a prediction, handed to the sink in order from top to bottom.

    Attributes:
        row: first scene row (pixels).
        encoded: ``(n, W)`` class ids as the output raster stores them
            (:func:`terraseg.io.predictions.class_encoding`): uint8 with 255 where not valid when the
            model has fewer than 255 classes (made on the device: a quarter of the bytes come back),
            else int32 with -1.
        probs: ``(K, n, W)`` float32 probabilities, or None when the caller did not ask for them.
        valid: ``(n, W)`` bool, False for nodata and padding.
        confidence: ``(3, n, W)`` float32 (:func:`confidence_bands`), NaN where not valid; None unless asked for.
    """

    row: int
    encoded: np.ndarray
    probs: np.ndarray | None
    valid: np.ndarray
    confidence: np.ndarray | None = None

    @cached_property
    def class_ids(self) -> np.ndarray:
        """``(n, W)`` int32 class ids, ``-1`` where not valid (computed once, on first use)."""
        if self.encoded.dtype == np.uint8:
            ids = self.encoded.astype(np.int32)
            ids[self.encoded == class_encoding(2)[1]] = -1
            return ids
        return self.encoded


def _finished(
    y: int, rows: torch.Tensor, ok: torch.Tensor, encoding: tuple[str, int], probabilities: bool, confidence: bool
) -> Block:
    """A finished strip: ``(K, n, W)`` blended probabilities on the device -> class ids in the raster's encoding
    (uint8 with its nodata, else int32 with -1), and, when asked, probabilities and confidence on the host."""
    if encoding[0] == "uint8":
        ids = torch.where(ok, class_argmax(rows).to(torch.uint8), encoding[1])
    else:
        ids = torch.where(ok, class_argmax(rows).to(torch.int32), -1)
    conf = torch.where(ok, confidence_bands(rows), float("nan")).cpu().numpy() if confidence else None
    return Block(
        row=y,
        encoded=ids.cpu().numpy(),
        probs=rows.cpu().numpy() if probabilities else None,
        valid=ok.cpu().numpy(),
        confidence=conf,
    )


class SlidingWindowPredictor:
    """Predicts whole scenes with a backend, the bundle's normalisation and Hann blending.

    One strip of windows at a time: a reader thread reads the next strip (raw dtype) while the
    current one is computed; the raw strip goes to the backend's device, where it is normalised
    (:func:`terraseg.data.normalize.normalize`), cut into windows, run through the network in
    batches, weighted and accumulated, and turned into class ids; only the class ids (int32) and,
    when asked for, the probabilities come back to the host, and a writer thread hands finished
    rows to the sink while the next strip is computed. The same torch code runs on the CPU and on
    CUDA (MONAI's ``sliding_window_inference`` keeps its blending on the device the same way).

    Args:
        backend: a :class:`TorchBackend`, an :class:`ArrayBackend`, or a callable
            ``(N, C, h, w) float32 array -> (N, K, h, w)`` probabilities (wrapped in an :class:`ArrayBackend`).
        stats: normalisation statistics from the bundle.
        num_classes: K.
        window: window side in pixels (multiple of 32).
        overlap: share of a window overlapping its neighbour, in ``[0, 0.9]``.
        batch_size: windows per forward pass.
        fit_max: a scene whose height and width are both at most this many pixels is predicted as one
            window rounded up to a multiple of 32 (no tiling, no blending; 0 disables). One 512^2
            forward costs less than the nine overlapping 256^2 windows that cover it.
        readers: reader threads; each reads one strip ahead, so ``readers`` strips are read while the
            device computes (one cannot keep a GPU fed on a large scene).

    Raises:
        ConfigError: a window that is not a positive multiple of 32, an overlap outside ``[0, 0.9]``.
    """

    def __init__(
        self,
        backend: Any,
        stats: NormStats,
        num_classes: int,
        window: int = 512,
        overlap: float = 0.25,
        batch_size: int = 4,
        fit_max: int = 0,
        readers: int = 1,
    ) -> None:
        if window % 32 or window < 32:
            raise ConfigError(f"window must be a positive multiple of 32 pixels (encoders downsample 5 times), got {window}.")
        if not 0 <= overlap <= 0.9:
            raise ConfigError(f"overlap must be between 0 and 0.9, got {overlap}.")
        self.backend = backend if hasattr(backend, "probabilities") else ArrayBackend(backend)
        self.stats, self.num_classes = stats, num_classes
        self.window, self.overlap, self.batch_size, self.fit_max = window, overlap, batch_size, fit_max
        self.readers = max(1, readers)

    @property
    def device(self) -> torch.device:
        """Where normalisation, blending and the argmax run (the backend's device)."""
        return getattr(self.backend, "device", torch.device("cpu"))

    def check_scene(self, scene: Scene) -> None:
        """Raise :class:`BundleError` when the scene's band count differs from the model's.

        Args:
            scene: the scene about to be predicted.
        """
        if self.stats.bands and scene.count != self.stats.bands:
            raise BundleError(
                f"{getattr(scene, 'path', scene.name)}: image has {scene.count} bands but the model expects {self.stats.bands}."
            )

    def geometry(self, height: int, width: int) -> tuple[int, int, list[int], list[int]]:
        """Window size and offsets for a ``height x width`` scene.

        Args:
            height: scene size in pixels.
            width: scene size in pixels.

        Returns:
            ``(window height, window width, row offsets, column offsets)`` in pixels: windows of
            :attr:`window` (a scene smaller than that gets one window rounded up to a multiple of
            32), at a stride of ``window * (1 - overlap)`` rounded down to a multiple of 32, the
            last row and column shifted flush with the scene's edge (:func:`terraseg.data.windows.grid_offsets`).
        """
        whole = 0 < max(height, width) <= self.fit_max
        th = -(-height // 32) * 32 if whole else min(self.window, -(-height // 32) * 32)
        tw = -(-width // 32) * 32 if whole else min(self.window, -(-width // 32) * 32)
        sy = max(int(th * (1 - self.overlap)) // 32 * 32, 32) if height > th else th
        sx = max(int(tw * (1 - self.overlap)) // 32 * 32, 32) if width > tw else tw
        return th, tw, grid_offsets(height, th, sy, "shift"), grid_offsets(width, tw, sx, "shift")

    @torch.inference_mode()
    def predict(
        self,
        scene: Scene,
        sink: Callable[[Block], None],
        probabilities: bool = True,
        confidence: bool = False,
        strips: tuple[int, int] | None = None,
    ) -> None:
        """Predict ``scene`` strip by strip, calling ``sink`` with each finished :class:`Block`.

        Args:
            scene: the scene (raw pixels; normalised here).
            sink: called once per strip, top to bottom, on a writer thread (one call at a time; on the calling thread
                when the scene is one strip of windows).
            probabilities: also bring the blended probabilities back to the host (``Block.probs``).
            confidence: also compute :func:`confidence_bands` on the device (``Block.confidence``).
            strips: ``(first, stop)`` strip indexes into :meth:`strip_rows`: only the rows from
                ``strip_rows[first]`` to ``strip_rows[stop]`` (the scene's end for the last strip) are
                handed to ``sink``. The earlier strips whose windows reach into those rows (the halo,
                one window high) are computed first and not emitted, so the blocks equal those of the
                whole scene: a row band predicted on its own (:mod:`terraseg.prediction.distributed`) blends
                exactly as the single-process path does. None: the whole scene.

        Raises:
            BundleError: band count mismatch, or a model that returns another class count.
            terraseg.errors.InputFileError: unreadable pixels. Whatever ``sink`` raises.
        """
        self.check_scene(scene)
        H, W = scene.height, scene.width
        th, tw, ys, xs = self.geometry(H, W)
        Wg, K, dev = max(W, tw), self.num_classes, self.device
        encoding = class_encoding(K)  # the raster's encoding (terraseg.io.predictions), made on the device
        cuda = dev.type == "cuda"
        weight = torch.from_numpy(hann_weights(th, tw) if len(ys) * len(xs) > 1 else np.ones((th, tw), np.float32)).to(dev)
        acc = torch.zeros((K, th, Wg), dtype=torch.float32, device=dev)
        wsum = torch.zeros((th, Wg), dtype=torch.float32, device=dev)

        first, stop = strips or (0, len(ys))
        if not 0 <= first < stop <= len(ys):
            raise ConfigError(f"strips {strips} out of range: the scene has {len(ys)} strips.")
        start = first
        while start > 0 and ys[start - 1] + th > ys[first]:  # the halo: earlier strips overlapping the band's first row
            start -= 1
        ys_all, ys = ys, ys[start:stop]

        def read(y: int):
            r = scene.read(y, 0, th, Wg, labels=False)
            image, valid = torch.from_numpy(r.image), torch.from_numpy(r.valid)
            return (image.pin_memory(), valid.pin_memory()) if cuda else (image, valid)

        # one strip (an upload, a chip): nothing to overlap, so it is read and handed to the sink on this thread
        pools = (
            (_Inline(), _Inline())
            if len(ys) == 1
            else (
                ThreadPoolExecutor(self.readers, thread_name_prefix="terraseg-read"),
                ThreadPoolExecutor(1, thread_name_prefix="terraseg-write"),
            )
        )
        with pools[0] as reader, pools[1] as writer:
            # `readers` strips in flight ahead of the device, each read by its own thread
            ahead = [reader.submit(read, y) for y in ys[: self.readers]]
            written: Future | None = None
            for i, y in enumerate(ys):
                raw, valid = ahead.pop(0).result()
                if i + self.readers < len(ys):
                    ahead.append(reader.submit(read, ys[i + self.readers]))
                valid = valid.to(dev, non_blocking=True)
                image = normalize(raw.to(dev, non_blocking=True), self.stats, valid)
                self._blend(image, xs, tw, weight, acc, wsum)
                next_y = ys_all[start + i + 1] if start + i + 1 < len(ys_all) else H
                n = min(next_y - y, H - y)
                keep = th - (next_y - y)
                if start + i < first:  # a halo strip: accumulated, not emitted
                    acc, wsum = _shift(acc, wsum, keep, th)
                    continue
                block = _finished(y, acc[:, :n, :W] / wsum[None, :n, :W], valid[:n, :W], encoding, probabilities, confidence)
                if written is not None:
                    written.result()  # at most one strip waits for the sink: memory stays bounded
                written = writer.submit(sink, block)
                acc, wsum = _shift(acc, wsum, keep, th)
            if written is not None:
                written.result()

    def _blend(
        self, image: torch.Tensor, xs: list[int], tw: int, weight: torch.Tensor, acc: torch.Tensor, wsum: torch.Tensor
    ) -> None:
        """Add the weighted probabilities of one strip's windows (columns ``xs``, ``tw`` wide) to ``acc`` and ``wsum``."""
        for b in range(0, len(xs), self.batch_size):
            bx = xs[b : b + self.batch_size]
            probs = self.backend.probabilities(torch.stack([image[:, :, x : x + tw] for x in bx])).to(acc.device)
            if probs.shape[1] != self.num_classes:
                raise BundleError(f"model returned {probs.shape[1]} classes, the bundle declares {self.num_classes}.")
            for x, p in zip(bx, probs):
                acc[:, :, x : x + tw] += p * weight
                wsum[:, x : x + tw] += weight

    def strip_rows(self, scene: Scene) -> list[int]:
        """First scene row of each strip (tile row) :meth:`predict` computes, top to bottom (pixels).

        Args:
            scene: the scene.
        """
        return self.geometry(scene.height, scene.width)[2]

    def single_window(self, scene: Scene) -> tuple[int, int] | None:
        """``(window height, window width)`` when the whole scene is one window, else None.

        Args:
            scene: the scene.
        """
        th, tw, ys, xs = self.geometry(scene.height, scene.width)
        return (th, tw) if len(ys) == 1 and len(xs) == 1 else None

    @torch.inference_mode()
    def predict_batch(self, scenes: list[Scene]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Predict many small scenes that are each one window of the same size, several per forward pass.

        Many small images (defect photos, chips) then cost one forward per ``batch_size`` images
        instead of one each; the result equals :meth:`predict_array` of each scene (one window: no
        blending, padding outside the image is nodata).

        Args:
            scenes: scenes whose :meth:`single_window` is the same size.

        Returns:
            ``(class ids (H, W) int64 with -1 for nodata, probabilities (K, H, W) float32)`` per scene.

        Raises:
            ConfigError: scenes that are not one window of one size.
            BundleError: band-count mismatch.
        """
        sizes = {self.single_window(s) for s in scenes}
        if len(sizes) != 1 or None in sizes:
            raise ConfigError("predict_batch takes scenes that are each one window of the same size.")
        th, tw = sizes.pop()  # type: ignore[misc]
        out = []
        for i in range(0, len(scenes), self.batch_size):
            chunk = scenes[i : i + self.batch_size]
            for s in chunk:
                self.check_scene(s)
            reads = [s.read(0, 0, th, tw, labels=False) for s in chunk]
            valid = torch.from_numpy(np.stack([r.valid for r in reads])).to(self.device)
            image = normalize(torch.from_numpy(np.stack([r.image for r in reads])).to(self.device), self.stats, valid)
            probs = self.backend.probabilities(image).to(self.device)
            if probs.shape[1] != self.num_classes:
                raise BundleError(f"model returned {probs.shape[1]} classes, the bundle declares {self.num_classes}.")
            ids = torch.where(valid, class_argmax(probs, dim=1).to(torch.int32), -1)
            for s, p, c in zip(chunk, probs.cpu().numpy(), ids.cpu().numpy()):
                out.append((c[: s.height, : s.width].astype(np.int64), p[:, : s.height, : s.width]))
        return out

    def predict_array(self, scene: Scene, probabilities: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Predict a whole scene into memory (small scenes: uploads, tests).

        Args:
            scene: the scene.
            probabilities: also return the probabilities (else None: they stay on the device).

        Returns:
            ``(class ids (H, W) int64 with -1 for nodata, probabilities (K, H, W) float32 or None)``.
        """
        ids = np.empty((scene.height, scene.width), dtype=np.int64)
        probs = np.empty((self.num_classes, scene.height, scene.width), dtype=np.float32) if probabilities else None

        def sink(b: Block) -> None:
            n = b.class_ids.shape[0]
            ids[b.row : b.row + n] = b.class_ids
            if probs is not None:
                probs[:, b.row : b.row + n] = b.probs

        self.predict(scene, sink, probabilities=probabilities)
        return ids, probs


class _Inline:
    """An executor that runs each task at once on the calling thread (the one-strip case of :meth:`predict`)."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # delivered by result(), as a pool's future does
            future.set_exception(e)
        return future


def _shift(acc: torch.Tensor, wsum: torch.Tensor, keep: int, th: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the ``keep`` rows still overlapped by the next strip to the top of the accumulator; zero the rest."""
    if keep > 0:
        acc = torch.roll(acc, -(th - keep), dims=1)
        wsum = torch.roll(wsum, -(th - keep), dims=0)
    acc[:, max(keep, 0) :] = 0
    wsum[max(keep, 0) :] = 0
    return acc, wsum


def window_settings(bundle, opts: InferenceConfig) -> tuple[int, float, int]:
    """``(window, overlap, fit_max)`` a bundle is predicted with under ``opts`` (one rule for every engine).

    Args:
        bundle: the loaded bundle.
        opts: inference options.

    Returns:
        Window side (pixels; the bundle's ``predict_window`` unless set), overlap share (pixel baselines:
        at most their texture margin, since their features are per pixel), and the single-window limit
        (``opts.fit_max``, at most the bundle's ``input.fit_max``; 0 with an explicit window).
    """
    win = opts.window or bundle.manifest.input.predict_window
    overlap = opts.overlap
    if bundle.manifest.baseline is not None:
        overlap = min(overlap, 2 * bundle.model.features.margin / win)
    fit = opts.fit_max if opts.window is None and bundle.manifest.baseline is None else 0
    if bundle.manifest.input.fit_max is not None:  # the tiling that validated better at training time
        fit = min(fit, bundle.manifest.input.fit_max)
    return win, overlap, fit


def tiling_for(bundle, options: InferenceConfig | None = None) -> SlidingWindowPredictor:
    """A predictor without a network, for planning: :meth:`SlidingWindowPredictor.strip_rows` and
    :meth:`~SlidingWindowPredictor.single_window` as :func:`predictor_for` would tile (no model is moved or compiled).

    Args:
        bundle: the loaded bundle.
        options: inference options (defaults when None).
    """
    from terraseg.config.inference import InferenceConfig

    win, overlap, fit = window_settings(bundle, options or InferenceConfig())
    return SlidingWindowPredictor(lambda x: x, bundle.stats, bundle.num_classes, win, overlap, 1, fit)


def predictor_for(bundle, options: InferenceConfig | None = None, **overrides: Any) -> SlidingWindowPredictor:
    """A :class:`SlidingWindowPredictor` for a loaded :class:`terraseg.bundle.Bundle`.

    Args:
        bundle: the loaded bundle.
        options: window, overlap, batch size, device, precision, layout and backend
            (:class:`terraseg.config.inference.InferenceConfig`; defaults when None).
        **overrides: fields of ``options`` to replace (e.g. ``window=128``), validated alike.

    Raises:
        BundleError: a scene-classification bundle, or 'onnx' asked for a bundle without an ONNX graph.
        ConfigError: an invalid option.
    """
    from terraseg.config.inference import InferenceConfig, build_options
    from terraseg.devices import inference_batch_size, resolve_device

    if bundle.manifest.task != "segmentation":
        raise BundleError(
            f"{bundle.path or bundle.manifest.name}: a sliding-window predictor maps segmentation bundles; "
            f"this bundle classifies scenes: use terraseg.infer.classify.ImageClassifier, or terraseg.predict."
        )
    opts = options or InferenceConfig()
    if overrides:
        opts = build_options(InferenceConfig, **(opts.model_dump() | overrides))
    if opts.window is not None and opts.window % 32:
        from terraseg.errors import ConfigError

        raise ConfigError(
            f"--window {opts.window}: segmentation windows are a multiple of 32 (the encoders downsample "
            f"5 times), e.g. {max(32, round(opts.window / 32) * 32)}."
        )
    win, overlap, fit = window_settings(bundle, opts)
    device = resolve_device(opts.device)
    batch = opts.batch_size or inference_batch_size(device, win, bundle.in_channels)
    from terraseg.infer.runtime import backend_for

    run: Any = backend_for(bundle, opts, device, win, batch)
    if opts.tta != "none":
        tta_backend = TTABackend(run, opts.tta)
        tta_backend.runtime = getattr(run, "runtime", None)  # type: ignore[attr-defined]
        run = tta_backend
    readers = opts.readers or (min(4, max(1, (os.cpu_count() or 1) // 4)) if device.startswith("cuda") else 1)
    return SlidingWindowPredictor(run, bundle.stats, bundle.num_classes, win, overlap, batch, fit, readers)


__all__ = [
    "ArrayBackend",
    "Block",
    "CONFIDENCE_BANDS",
    "SlidingWindowPredictor",
    "TTABackend",
    "TorchBackend",
    "class_argmax",
    "confidence_bands",
    "hann_weights",
    "predictor_for",
    "tiling_for",
    "window_settings",
]
