"""Scene classification with a bundle: image files -> ``predictions.csv``; a georeferenced scene ->
a grid of windows classified into a raster and GeoJSON polygons.

Every image goes through :func:`terraseg.data.classes.to_input` (the bundle's normalisation, resized
to its window), exactly as in training and evaluation.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import Affine

from terraseg.bundle import Bundle
from terraseg.data.classes import load_checked, to_input
from terraseg.errors import BundleError, TerrasegError
from terraseg.io.atomic import atomic_path
from terraseg.io.raster import open_raster, read_window


class ImageClassifier:
    """Class probabilities for raw images with a classification bundle (PyTorch on ``device``).

    Args:
        bundle: a loaded bundle of task 'classification'. batch_size: images per forward pass.

    Raises:
        BundleError: the bundle is not a classification bundle.
    """

    def __init__(self, bundle: Bundle, batch_size: int = 32, device: str = "cpu") -> None:
        if bundle.manifest.task != "classification":
            raise BundleError(f"bundle '{bundle.manifest.name}' is a {bundle.manifest.task} model, not a classifier.")
        self.bundle, self.batch_size, self.device = bundle, batch_size, torch.device(device)
        self.model = bundle.model.eval().to(self.device)
        self.stats, self.size, self.bands = bundle.stats, bundle.manifest.input.window, bundle.manifest.input.bands

    @torch.inference_mode()
    def probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        """``(N, K)`` float32 softmax probabilities for raw ``(C, H, W)`` images of any size."""
        out = []
        for i in range(0, len(images), self.batch_size):
            x = torch.stack([to_input(im, self.stats, self.size) for im in images[i:i + self.batch_size]]).to(self.device)
            out.append(torch.softmax(self.model(x).float(), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.bundle.class_names)), np.float32)

    def classify_paths(self, paths: list[str], chunk: int = 256) -> Iterator[tuple[str, np.ndarray | TerrasegError]]:
        """``(path, (K,) probabilities)`` per image file, or ``(path, error)`` for an unreadable image or one
        with another band count; images are decoded ``chunk`` at a time, so memory does not grow with the list."""
        for i in range(0, len(paths), chunk):
            good: list[tuple[str, np.ndarray]] = []
            for p in paths[i:i + chunk]:
                try:
                    good.append((p, load_checked(p, self.bands)))
                except TerrasegError as e:
                    yield p, e
            yield from zip((p for p, _ in good), self.probabilities([im for _, im in good]))


@dataclass
class ClassifyResult:
    """``predictions.csv`` (or None when nothing was classified) and the inputs that failed, with reasons."""

    csv: Path | None
    rows: list[dict] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def classify_files(bundle: str | Path | Bundle, inputs: list[str | Path], out_dir: str | Path, batch_size: int = 32) -> ClassifyResult:
    """Classify image files; write ``<out_dir>/predictions.csv`` (file, predicted, one probability column per class).

    A bad input (unreadable, wrong band count) is reported in ``failures`` and skipped.
    """
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    clf = ImageClassifier(b, batch_size)
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
                   batch_size: int = 32) -> dict[str, Path]:
    """Classify a georeferenced scene on a grid of ``window`` x ``window`` pixel windows.

    Writes ``<stem>_classes.tif`` (uint8 class ids, one pixel per window, nodata 255, transform
    scaled by ``window``, the scene's CRS), ``<stem>_probs.tif`` (float32, one band per class) and
    ``<stem>_windows.geojson`` (one polygon per window, in the scene's CRS, with class and
    probability). Edge windows that stick out of the scene are padded with zeros; windows read one
    row of windows at a time, so memory does not grow with the scene.

    Raises:
        BundleError: band-count mismatch. InputFileError: unreadable raster.
    """
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    clf = ImageClassifier(b, batch_size)
    win = window or b.manifest.input.window
    src = Path(raster)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = b.class_names
    features = []
    with open_raster(src) as ds:
        if ds.count != clf.bands:
            raise BundleError(f"{src}: image has {ds.count} bands but the model expects {clf.bands}.")
        rows, cols = math.ceil(ds.height / win), math.ceil(ds.width / win)
        transform = ds.transform * Affine.scale(win)
        prof = dict(driver="GTiff", width=cols, height=rows, crs=ds.crs, transform=transform, compress="deflate")
        paths = {"classes": out / f"{src.stem}_classes.tif", "probabilities": out / f"{src.stem}_probs.tif",
                 "windows": out / f"{src.stem}_windows.geojson"}
        with atomic_path(paths["classes"]) as t1, atomic_path(paths["probabilities"]) as t2:
            with rasterio.open(t1, "w", count=1, dtype="uint8", nodata=255, **prof) as dc, \
                    rasterio.open(t2, "w", count=len(names), dtype="float32", **prof) as dp:
                for r in range(rows):
                    strip = read_window(ds, rasterio.windows.Window(0, r * win, cols * win, win), fill=0, path=str(src))
                    tiles = [strip[:, :, c * win:(c + 1) * win] for c in range(cols)]
                    probs = clf.probabilities(tiles)
                    ids = probs.argmax(1).astype(np.uint8)
                    win_row = rasterio.windows.Window(0, r, cols, 1)
                    dc.write(ids[None, None, :], window=win_row)
                    dp.write(probs.T[:, None, :].astype(np.float32), window=win_row)
                    for c in range(cols):
                        x0, y0 = transform * (c, r)
                        x1, y1 = transform * (c + 1, r + 1)
                        features.append({"type": "Feature", "properties": {
                            "row": r, "col": c, "class_id": int(ids[c]), "class": names[ids[c]], "probability": round(float(probs[c].max()), 6)},
                            "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}})
        crs = {"type": "name", "properties": {"name": ds.crs.to_string()}} if ds.crs else None
    with atomic_path(paths["windows"]) as tmp:
        Path(tmp).write_text(json.dumps({"type": "FeatureCollection", **({"crs": crs} if crs else {}), "features": features}))
    return paths
