"""Scene classification with a bundle: image files -> ``predictions.csv``; a georeferenced scene ->
a grid of windows classified into a raster and GeoJSON polygons.

Every image goes through :func:`terraseg.data.classes.to_input` (the bundle's normalisation, resized
to its window), exactly as in training and evaluation.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.transform import Affine

from terraseg.bundle import Bundle
from terraseg.data.classes import to_input
from terraseg.data.windows import grid_windows
from terraseg.errors import BundleError, TerrasegError
from terraseg.io.atomic import atomic_path, write_text_atomic
from terraseg.io.predictions import PredictionWriter
from terraseg.io.raster import Grid, valid_mask
from terraseg.infer.inputs import open_input, read_input_image


class ImageClassifier:
    """Class probabilities for raw images with a classification bundle, on the backends segmentation uses.

    The network runs on what :func:`terraseg.infer.runtime.backend_for` picks from ``options``: PyTorch
    in float32 or bf16 autocast (``auto`` measures which is faster here), or the bundle's ONNX graph
    in ONNX Runtime (``terraseg export BUNDLE --format onnx``).

    Args:
        bundle: a loaded bundle of task 'classification'. batch_size: images per forward pass.
        device: 'auto', 'cpu' or a CUDA device (when ``options`` is not given).
        options: :class:`terraseg.config.inference.InferenceConfig` (device, backend, precision, layout,
            threads); its ``batch_size``, when set, replaces ``batch_size``.

    Raises:
        BundleError: the bundle is not a classification bundle, or 'onnx' without an ONNX graph.
    """

    def __init__(self, bundle: Bundle, batch_size: int = 32, device: str = "auto", options: Any = None) -> None:
        from terraseg.config.inference import InferenceConfig
        from terraseg.devices import resolve_device
        from terraseg.infer.runtime import backend_for

        if bundle.manifest.task != "classification":
            raise BundleError(f"bundle '{bundle.manifest.name}' is a {bundle.manifest.task} model, not a classifier.")
        opts = options or InferenceConfig(device=device)
        self.bundle, self.batch_size = bundle, opts.batch_size or batch_size
        self.device = torch.device(resolve_device(opts.device))
        spec = bundle.manifest.input
        self.stats, self.size, self.nodata = bundle.stats, spec.input_size or spec.train_window, spec.nodata
        self.backend = backend_for(bundle, opts, str(self.device), self.size, self.batch_size)
        self.runtime = getattr(self.backend, "runtime", None)

    @torch.inference_mode()
    def probabilities(self, images: list[np.ndarray], valid: list[np.ndarray] | None = None) -> np.ndarray:
        """``(N, K)`` float32 softmax probabilities for raw ``(C, H, W)`` images of any size.

        Args:
            images: raw images with the model's bands. valid: optional ``(H, W)`` bool masks
                (default: from the bundle's nodata value and NaNs).
        """
        out = []
        masks = valid if valid is not None else [valid_mask(im, self.nodata) for im in images]
        for i in range(0, len(images), self.batch_size):
            x = torch.stack([to_input(im, self.stats, self.size, v)
                             for im, v in zip(images[i:i + self.batch_size], masks[i:i + self.batch_size])])
            out.append(self.backend.probabilities(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.bundle.class_names)), np.float32)

    def classify_paths(self, paths: list[str], chunk: int = 256) -> Iterator[tuple[str, np.ndarray | TerrasegError]]:
        """``(path, (K,) probabilities)`` per image file, or ``(path, error)`` for an unreadable image or one
        with another band count; images are decoded ``chunk`` at a time, so memory does not grow with the list."""
        for i in range(0, len(paths), chunk):
            good: list[tuple[str, np.ndarray]] = []
            for p in paths[i:i + chunk]:
                try:
                    good.append((p, read_input_image(self.bundle, p)))
                except TerrasegError as e:
                    yield p, e
            yield from zip((p for p, _ in good), self.probabilities([im for _, im in good]))


@dataclass
class ClassifyResult:
    """``predictions.csv`` (or None when nothing was classified) and the inputs that failed, with reasons."""

    csv: Path | None
    rows: list[dict] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def classify_files(bundle: str | Path | Bundle, inputs: list[str | Path], out_dir: str | Path, batch_size: int = 32,
                   options: Any = None) -> ClassifyResult:
    """Classify image files; write ``<out_dir>/predictions.csv`` (file, predicted, one probability column per class).

    A bad input (unreadable, wrong band count) is reported in ``failures`` and skipped.

    Args:
        bundle: classification bundle (path or loaded).
        inputs: image files or ``.zip`` members.
        out_dir: output folder.
        batch_size: images per forward pass.
        options: :class:`terraseg.config.inference.InferenceConfig` (device, backend, precision), or None.

    Returns:
        :class:`ClassifyResult` (CSV path, rows, failures).

    Raises:
        BundleError: not a classification bundle. OutputError: ``out_dir`` cannot be written.
    """
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    clf = ImageClassifier(b, batch_size, options=options)
    names = b.class_names
    res = ClassifyResult(None)
    for p, pr in clf.classify_paths([str(p) for p in inputs]):
        if isinstance(pr, TerrasegError):
            res.failures[p] = str(pr)
            continue
        res.rows.append({"file": p, "predicted": names[int(pr.argmax())], **{f"p_{n}": round(float(v), 6) for n, v in zip(names, pr)}})
    if res.rows:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "predictions.csv") as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(res.rows[0]))
            w.writeheader()
            w.writerows(res.rows)
        res.csv = out / "predictions.csv"
    return res


def classify_scene(bundle: str | Path | Bundle, raster: str | Path, out_dir: str | Path, window: int | None = None,
                   batch_size: int = 32, options: Any = None) -> dict[str, Path]:
    """Classify a georeferenced scene on a grid of ``window`` x ``window`` pixel windows.

    Writes ``<stem>_classes.tif`` (class ids, one pixel per window, transform scaled by ``window``,
    the scene's CRS; encoded by :class:`terraseg.io.predictions.PredictionWriter`), ``<stem>_probs.tif``
    (float32, one band per class) and ``<stem>_windows.geojson`` (one polygon per classified window,
    in the scene's CRS, with class and probability). Edge windows reach past the scene (padded,
    treated as nodata); a window holding no valid pixel is nodata in the rasters and left out of
    the GeoJSON. Windows are read one row of windows at a time, so memory does not grow with the scene.

    Args:
        bundle: classification bundle (path or loaded). raster: the scene. out_dir: output folder.
        window: window side in pixels (default: the bundle's input size). batch_size: windows per forward.
        options: :class:`terraseg.config.inference.InferenceConfig` (device, backend, precision), or None.

    Returns:
        ``{"classes", "probabilities", "windows"}`` paths.

    Raises:
        BundleError: band-count mismatch. InputFileError: unreadable raster. OutputError: unwritable folder.
    """
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    clf = ImageClassifier(b, batch_size, options=options)
    win = window or clf.size
    scene = open_input(b, raster)
    src, out = Path(raster), Path(out_dir)
    names = b.class_names
    cells = grid_windows(scene.height, scene.width, win, edge="pad")
    rows, cols = len({w.row for w in cells}), len({w.col for w in cells})
    grid = Grid(cols, rows, scene.crs, scene.transform * Affine.scale(win))
    paths = {"classes": out / f"{src.stem}_classes.tif", "probabilities": out / f"{src.stem}_probs.tif",
             "windows": out / f"{src.stem}_windows.geojson"}
    features = []
    with PredictionWriter(paths["classes"], grid, names, [c.color for c in b.manifest.classes], paths["probabilities"]) as writer:
        for r in range(rows):
            strip = scene.read(r * win, 0, win, cols * win, labels=False)
            tiles = [strip.image[:, :, c * win:(c + 1) * win] for c in range(cols)]
            valid = [strip.valid[:, c * win:(c + 1) * win] for c in range(cols)]
            probs = clf.probabilities(tiles, valid)
            ids = probs.argmax(1)
            empty = ~np.array([v.any() for v in valid])
            ids[empty] = -1
            writer.write(r, 0, ids[None, :], probs.T[:, None, :])
            for c in np.flatnonzero(~empty):
                x0, y0 = grid.transform * (c, r)
                x1, y1 = grid.transform * (c + 1, r + 1)
                features.append({"type": "Feature", "properties": {
                    "row": r, "col": int(c), "class_id": int(ids[c]), "class": names[ids[c]], "probability": round(float(probs[c].max()), 6)},
                    "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}})
    crs = {"type": "name", "properties": {"name": scene.crs.to_string()}} if scene.crs else None
    write_text_atomic(paths["windows"], json.dumps({"type": "FeatureCollection", **({"crs": crs} if crs else {}), "features": features}))
    return paths
