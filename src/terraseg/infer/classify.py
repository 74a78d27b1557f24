"""The scene-classification engine: class probabilities of images and of a scene's grid of windows.

Every image goes through :func:`terraseg.data.classes.to_input` (the bundle's normalisation, resized
to its window), exactly as in training and evaluation. This module computes; it writes no file
(the outputs are written by :mod:`terraseg.prediction.classify` and :mod:`terraseg.evaluation.classify`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rasterio.transform import Affine

from terraseg.bundle import Bundle
from terraseg.data.classes import to_input
from terraseg.data.scenes import Scene
from terraseg.data.windows import grid_windows
from terraseg.errors import BundleError, TerrasegError
from terraseg.infer.inputs import read_input_image
from terraseg.io.raster import Grid, valid_mask


class ImageClassifier:
    """Class probabilities for raw images with a classification bundle, on the backends segmentation uses.

    The network runs on what :func:`terraseg.infer.runtime.backend_for` picks from ``options``: PyTorch
    in float32 or bf16 autocast (``auto`` measures which is faster here), or the bundle's ONNX graph
    in ONNX Runtime (``terraseg export BUNDLE --format onnx``).

    Args:
        bundle: a loaded bundle of task 'classification'.
        batch_size: images per forward pass.
        device: 'auto', 'cpu' or a CUDA device (when ``options`` is not given).
        options: :class:`terraseg.config.inference.InferenceConfig` (device, backend, precision, layout, threads,
            ``tta``: the mean over flipped / D4 views of each image); its ``batch_size``, when set, replaces
            ``batch_size``.
        backend: a backend to run instead of the bundle's network (a Ray Serve deployment), or None.

    Raises:
        BundleError: the bundle is not a classification bundle, or 'onnx' without an ONNX graph.
    """

    def __init__(
        self, bundle: Bundle, batch_size: int = 32, device: str = "auto", options: Any = None, backend: Any = None
    ) -> None:
        from terraseg.config.inference import InferenceConfig
        from terraseg.devices import resolve_device
        from terraseg.infer.runtime import backend_for

        if bundle.manifest.task != "classification":
            raise BundleError(f"bundle '{bundle.manifest.name}' is a {bundle.manifest.task} model, not a classifier.")
        opts = options or InferenceConfig(device=device)
        self.bundle, self.batch_size = bundle, opts.batch_size or batch_size
        self.device = torch.device(resolve_device(opts.device))
        spec = bundle.manifest.input
        self.stats, self.size, self.nodata = bundle.stats, spec.side, spec.nodata
        self.backend = backend if backend is not None else backend_for(bundle, opts, str(self.device), self.size, self.batch_size)
        self.runtime = getattr(self.backend, "runtime", None)
        if opts.tta != "none":
            from terraseg.infer.backends import TTABackend

            self.backend = TTABackend(self.backend, opts.tta)

    @property
    def window(self) -> int:
        """The side in pixels of each forward-pass input (every image is resized to it), as a predictor's window."""
        return self.size

    @torch.inference_mode()
    def probabilities(self, images: list[np.ndarray], valid: list[np.ndarray] | None = None) -> np.ndarray:
        """``(N, K)`` float32 softmax probabilities for raw ``(C, H, W)`` images of any size.

        Args:
            images: raw images with the model's bands.
            valid: optional ``(H, W)`` bool masks (default: from the bundle's nodata value and NaNs).
        """
        out = []
        masks = valid if valid is not None else [valid_mask(im, self.nodata) for im in images]
        for i in range(0, len(images), self.batch_size):
            x = torch.stack(
                [
                    to_input(im, self.stats, self.size, v)
                    for im, v in zip(images[i : i + self.batch_size], masks[i : i + self.batch_size])
                ]
            )
            out.append(self.backend.probabilities(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.bundle.class_names)), np.float32)

    def classify_paths(
        self,
        paths: list[str],
        chunk: int = 256,
        bands: Sequence[str | int] | None = None,
        input_range: tuple[float, float] | None = None,
    ) -> Iterator[tuple[str, np.ndarray | TerrasegError]]:
        """``(path, (K,) probabilities)`` per image file, or ``(path, error)`` for an unreadable image or one
        with another band count or bit depth; images are decoded ``chunk`` at a time, so memory does not grow
        with the list.

        Args:
            paths: image files or ``<archive>.zip/<member>``.
            chunk: images decoded at a time.
            bands: the user's band pick and value range (:func:`terraseg.infer.inputs.read_input_image`).
            input_range: the user's band pick and value range (:func:`terraseg.infer.inputs.read_input_image`).
        """
        for i in range(0, len(paths), chunk):
            good: list[tuple[str, np.ndarray]] = []
            for p in paths[i : i + chunk]:
                try:
                    good.append((p, read_input_image(self.bundle, p, bands, input_range)))
                except TerrasegError as e:
                    yield p, e
            yield from zip((p for p, _ in good), self.probabilities([im for _, im in good]))


@dataclass
class GridRow:
    """One row of a scene's classification grid.

    Attributes:
        row: the row index.
        probabilities: ``(cols, K)`` float32.
        empty: ``(cols,)`` bool, windows without a valid pixel.
    """

    row: int
    probabilities: np.ndarray
    empty: np.ndarray

    @property
    def class_ids(self) -> np.ndarray:
        """``(cols,)`` int64 class ids, -1 where the window is empty."""
        ids = self.probabilities.argmax(1)
        ids[self.empty] = -1
        return ids


def grid_geometry(scene: Scene, window: int) -> tuple[int, int, Grid]:
    """``(rows, cols, grid)`` of a scene cut into ``window`` x ``window`` pixel windows (edge windows padded).

    The grid has one cell per window: the scene's CRS, its transform scaled by ``window``.

    Args:
        scene: the scene.
        window: window side in pixels.
    """

    cells = grid_windows(scene.height, scene.width, window, edge="pad")
    rows, cols = len({w.row for w in cells}), len({w.col for w in cells})
    return rows, cols, Grid(cols, rows, scene.crs, scene.transform * Affine.scale(window))


def classify_grid(clf: ImageClassifier, scene: Scene, window: int) -> Iterator[GridRow]:
    """Classify a scene on a grid of ``window`` x ``window`` windows, one row of windows at a time.

    Edge windows reach past the scene (padded, treated as nodata); memory holds one row of windows.

    Args:
        clf: the classifier.
        scene: the scene, opened for the bundle (:func:`terraseg.infer.inputs.open_input`).
        window: window side in pixels.

    Yields:
        :class:`GridRow` per row of windows, top to bottom.
    """
    rows, cols, _ = grid_geometry(scene, window)
    for r in range(rows):
        strip = scene.read(r * window, 0, window, cols * window, labels=False)
        tiles = [strip.image[:, :, c * window : (c + 1) * window] for c in range(cols)]
        valid = [strip.valid[:, c * window : (c + 1) * window] for c in range(cols)]
        yield GridRow(r, clf.probabilities(tiles, valid), ~np.array([v.any() for v in valid]))


__all__ = ["GridRow", "ImageClassifier", "classify_grid", "grid_geometry"]
