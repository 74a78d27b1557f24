"""Streaming sliding-window inference with smooth blending of overlaps.

The scene is covered by tiles of ``window`` pixels (smaller scenes by one tile rounded up to a
multiple of 32, padded) at a stride of ``window * (1 - overlap)``; the last tile of each row and
column is shifted inside the scene, so no tile is mostly padding and no pixel is left out. Tile
probabilities are blended with a 2-D Hann window (as in geo-inference and Huang et al., "Tiling
and Stitching Segmentation Output for Remote Sensing", 2018), which removes the seams a plain
average leaves at tile borders.

Memory: tiles are processed one tile-row (strip) at a time; an accumulator of
``K x window x width`` floats holds the overlapping rows, and each strip's finished rows are handed
to a callback (written to disk, or compared with labels) and dropped. Memory depends on the scene
width and the window, never on the scene height.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from terraseg.data.normalize import NormStats, normalize
from terraseg.data.scenes import Scene
from terraseg.data.windows import grid_offsets
from terraseg.errors import BundleError, ConfigError
from terraseg.models.factory import logits_to_probs

if TYPE_CHECKING:
    from terraseg.config.inference import InferenceConfig


def hann_weights(h: int, w: int, floor: float = 1e-3) -> np.ndarray:
    """``(h, w)`` float32 2-D Hann window, ``sin^2(pi (i + 0.5) / n)``, floored at ``floor``.

    The floor keeps pixels at scene borders (covered by one tile edge only) well defined.

    Args:
        h, w: window height and width in pixels.
        floor: smallest weight.

    Returns:
        ``(h, w)`` float32 weights in ``[floor, 1]``.
    """
    def hann(n: int) -> np.ndarray:
        return np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2

    return np.maximum(np.outer(hann(h), hann(w)), floor).astype(np.float32)


@dataclass
class Block:
    """Finished rows of a prediction, handed to the sink in order from top to bottom.

    Attributes:
        row: first scene row. class_ids: ``(n, W)`` class ids (int64; ``-1`` where not valid).
        probs: ``(K, n, W)`` float32 probabilities. valid: ``(n, W)`` bool (False for nodata).
    """

    row: int
    class_ids: np.ndarray
    probs: np.ndarray
    valid: np.ndarray


class TorchBackend:
    """Runs a PyTorch network: ``(N, C, h, w)`` float32 -> ``(N, K, h, w)`` float32 probabilities.

    Args:
        model: network returning logits. device: 'cpu', 'cuda', ...
        precision: '32', or 'bf16'/'16' for autocast. channels_last: NHWC memory format.
    """

    def __init__(self, model: torch.nn.Module, device: str = "cpu", precision: str = "32", channels_last: bool = False) -> None:
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.precision = precision
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            logits = self.model(x)
        return logits_to_probs(logits).cpu().numpy()


class SlidingWindowPredictor:
    """Predicts whole scenes with a backend, the bundle's normalisation and Hann blending.

    Args:
        backend: callable ``(N, C, h, w) float32 -> (N, K, h, w)`` probabilities.
        stats: normalisation statistics from the bundle.
        num_classes: K.
        window: tile size in pixels (multiple of 32).
        overlap: share of a tile overlapping its neighbour, in ``[0, 0.9]``.
        batch_size: tiles per forward pass.
    """

    def __init__(self, backend: Callable[[np.ndarray], np.ndarray], stats: NormStats, num_classes: int,
                 window: int = 512, overlap: float = 0.25, batch_size: int = 4) -> None:
        if window % 32 or window < 32:
            raise ConfigError(f"window must be a positive multiple of 32 pixels (encoders downsample 5 times), got {window}.")
        if not 0 <= overlap <= 0.9:
            raise ConfigError(f"overlap must be between 0 and 0.9, got {overlap}.")
        self.backend, self.stats, self.num_classes = backend, stats, num_classes
        self.window, self.overlap, self.batch_size = window, overlap, batch_size

    def check_scene(self, scene: Scene) -> None:
        """Raise :class:`BundleError` when the scene's band count differs from the model's."""
        if self.stats.bands and scene.count != self.stats.bands:
            raise BundleError(
                f"{getattr(scene, 'path', scene.name)}: image has {scene.count} bands but the model expects {self.stats.bands}."
            )

    def predict(self, scene: Scene, sink: Callable[[Block], None]) -> None:
        """Predict ``scene`` strip by strip, calling ``sink`` with each finished :class:`Block`.

        Raises:
            BundleError: band count mismatch. terraseg.errors.InputFileError: unreadable pixels.
        """
        self.check_scene(scene)
        H, W = scene.height, scene.width
        th = min(self.window, -(-H // 32) * 32)
        tw = min(self.window, -(-W // 32) * 32)
        sy = max(int(th * (1 - self.overlap)) // 32 * 32, 32) if H > th else th
        sx = max(int(tw * (1 - self.overlap)) // 32 * 32, 32) if W > tw else tw
        ys, xs = grid_offsets(H, th, sy, "shift"), grid_offsets(W, tw, sx, "shift")
        Wg = max(W, tw)
        K = self.num_classes
        weight = hann_weights(th, tw) if len(ys) * len(xs) > 1 else np.ones((th, tw), np.float32)
        acc = np.zeros((K, th, Wg), dtype=np.float32)
        wsum = np.zeros((th, Wg), dtype=np.float32)
        for i, y in enumerate(ys):
            strip = scene.read(y, 0, th, Wg, labels=False)
            image = normalize(strip.image, self.stats, strip.valid)
            for b in range(0, len(xs), self.batch_size):
                bx = xs[b : b + self.batch_size]
                batch = np.stack([image[:, :, x : x + tw] for x in bx])
                probs = self.backend(batch)
                if probs.shape[1] != K:
                    raise BundleError(f"model returned {probs.shape[1]} classes, the bundle declares {K}.")
                for x, p in zip(bx, probs):
                    acc[:, :, x : x + tw] += p * weight
                    wsum[:, x : x + tw] += weight
            next_y = ys[i + 1] if i + 1 < len(ys) else H
            n = min(next_y - y, H - y)
            probs_rows = acc[:, :n, :W] / wsum[None, :n, :W]
            valid = strip.valid[:n, :W]
            ids = probs_rows.argmax(axis=0).astype(np.int64)
            ids[~valid] = -1
            sink(Block(row=y, class_ids=ids, probs=probs_rows, valid=valid))
            # shift the accumulator up by the finished rows
            keep = th - (next_y - y)
            if keep > 0:
                acc[:, :keep] = acc[:, th - keep :]
                wsum[:keep] = wsum[th - keep :]
            acc[:, max(keep, 0) :] = 0
            wsum[max(keep, 0) :] = 0

    def predict_array(self, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
        """Whole-scene class ids ``(H, W)`` int64 (-1 = nodata) and probabilities ``(K, H, W)`` in memory."""
        ids = np.empty((scene.height, scene.width), dtype=np.int64)
        probs = np.empty((self.num_classes, scene.height, scene.width), dtype=np.float32)

        def sink(b: Block) -> None:
            n = b.class_ids.shape[0]
            ids[b.row : b.row + n] = b.class_ids
            probs[:, b.row : b.row + n] = b.probs

        self.predict(scene, sink)
        return ids, probs


def predictor_for(bundle, options: InferenceConfig | None = None, **overrides: Any) -> SlidingWindowPredictor:
    """A :class:`SlidingWindowPredictor` for a loaded :class:`terraseg.bundle.Bundle`.

    Args:
        bundle: the loaded bundle.
        options: window, overlap, batch size, device, precision, layout and backend
            (:class:`terraseg.config.inference.InferenceConfig`; defaults when None).
        **overrides: fields of ``options`` to replace (e.g. ``window=128``), validated alike.

    Raises:
        BundleError: 'onnx' asked for a bundle without an ONNX graph.
        ConfigError: an invalid option.
    """
    from terraseg.config.inference import InferenceConfig, build_options

    opts = options or InferenceConfig()
    if overrides:
        opts = build_options(InferenceConfig, **(opts.model_dump() | overrides))
    win = opts.window or bundle.manifest.input.predict_window
    overlap = opts.overlap
    run: Callable[[np.ndarray], np.ndarray]
    if bundle.manifest.baseline is not None:
        run = bundle.model  # pixel baseline: features are per pixel, so tiles overlap only by the texture window
        overlap = min(overlap, 2 * bundle.model.features.margin / win)
    elif opts.backend == "onnx":
        from terraseg.predict.onnx import onnx_backend_for

        run = onnx_backend_for(bundle, opts.threads, opts.device)
    else:
        run = TorchBackend(bundle.model, device=opts.device, precision=opts.precision, channels_last=opts.channels_last)
    return SlidingWindowPredictor(run, bundle.stats, bundle.num_classes, win, overlap, opts.batch_size)


__all__ = ["Block", "SlidingWindowPredictor", "TorchBackend", "hann_weights", "predictor_for"]
