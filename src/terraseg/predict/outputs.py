"""Prediction outputs: class-id GeoTIFF/PNG, probability raster, colour overlay; all written atomically."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from terraseg.data.scenes import RasterScene, Scene
from terraseg.io.atomic import atomic_path
from terraseg.io.images import write_png
from terraseg.io.raster import geotiff_profile, open_raster
from terraseg.predict.sliding import Block, SlidingWindowPredictor

NODATA_CLASS = 255


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """'#rrggbb' -> (r, g, b)."""
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def colorize(ids: np.ndarray, colors: list[str]) -> np.ndarray:
    """``(H, W)`` class ids -> ``(3, H, W)`` uint8 colours (nodata / out-of-range: black)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for i, c in enumerate(colors[:255]):
        lut[i] = hex_to_rgb(c)
    return np.moveaxis(lut[np.clip(ids, 0, 255).astype(np.uint8)], -1, 0)


def display_rgb(image: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """``(C, H, W)`` raw pixels -> ``(3, H, W)`` uint8 for display: first three bands (or grey), 2-98% stretch."""
    x = image[:3].astype(np.float32)
    if x.shape[0] < 3:
        x = np.repeat(x[:1], 3, axis=0)
    sel = x[:, valid] if valid is not None and valid.any() else x.reshape(3, -1)
    lo, hi = np.percentile(sel, 2, axis=1), np.percentile(sel, 98, axis=1)
    y = (x - lo[:, None, None]) / np.maximum(hi - lo, 1e-6)[:, None, None]
    return (np.clip(y, 0, 1) * 255).astype(np.uint8)


def blend_overlay(rgb: np.ndarray, ids: np.ndarray, colors: list[str], alpha: float = 0.45) -> np.ndarray:
    """Colour non-background classes (id >= 1) over an RGB image; background and nodata stay as they are."""
    col = colorize(ids, colors).astype(np.float32)
    out = rgb.astype(np.float32)
    m = ids >= 1
    out[:, m] = (1 - alpha) * out[:, m] + alpha * col[:, m]
    return out.astype(np.uint8)


def predict_to_files(
    predictor: SlidingWindowPredictor,
    scene: Scene,
    out_dir: Path,
    colors: list[str],
    probabilities: bool = False,
    overlay: bool = False,
    overlay_max_side: int = 2048,
) -> dict[str, str]:
    """Predict one scene and write its outputs under ``out_dir`` with the input's stem.

    Georeferenced rasters give ``<stem>.tif`` (uint8 class ids, nodata 255, the input's CRS,
    transform and size), streamed window by window; plain images give ``<stem>.png`` (class ids).
    ``probabilities`` adds ``<stem>_probs.tif`` (float32, one band per class); ``overlay`` adds
    ``<stem>_overlay.png`` (the image with class colours, at most ``overlay_max_side`` pixels).

    Returns:
        ``{"prediction": path, "probabilities": path, "overlay": path}`` for what was written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(getattr(scene, "path", scene.name)).stem
    K = predictor.num_classes
    dtype = "uint8" if K < NODATA_CLASS else "uint16"
    nodata = NODATA_CLASS if K < NODATA_CLASS else 65535
    outputs: dict[str, str] = {}
    georef = isinstance(scene, RasterScene) and scene.info.georeferenced
    if georef:
        assert isinstance(scene, RasterScene)
        target = out_dir / f"{stem}.tif"
        ptarget = out_dir / f"{stem}_probs.tif"
        with atomic_path(target) as tmp, (atomic_path(ptarget) if probabilities else _null()) as ptmp:
            with rasterio.open(tmp, "w", **geotiff_profile(scene.info, 1, dtype, nodata)) as dst:
                pdst = rasterio.open(ptmp, "w", **geotiff_profile(scene.info, K, "float32", np.nan)) if ptmp else None
                try:
                    def sink(b: Block) -> None:
                        n = b.class_ids.shape[0]
                        ids = np.where(b.valid, b.class_ids, nodata).astype(dtype)
                        dst.write(ids[None], window=Window(0, b.row, scene.width, n))
                        if pdst is not None:
                            p = b.probs.copy()
                            p[:, ~b.valid] = np.nan
                            pdst.write(p, window=Window(0, b.row, scene.width, n))

                    predictor.predict(scene, sink)
                    if dtype == "uint8":
                        cmap = {i: hex_to_rgb(c) + (255,) for i, c in enumerate(colors)}
                        dst.write_colormap(1, cmap | {nodata: (0, 0, 0, 0)})
                finally:
                    if pdst is not None:
                        pdst.close()
        outputs["prediction"] = str(target)
        if probabilities:
            outputs["probabilities"] = str(ptarget)
        if overlay:
            outputs["overlay"] = str(_raster_overlay(scene, target, out_dir / f"{stem}_overlay.png", colors, overlay_max_side))
        return outputs
    ids, probs = predictor.predict_array(scene)
    ids_out = np.where(ids < 0, nodata, ids).astype(dtype)
    target = out_dir / f"{stem}.png"
    write_png(target, ids_out)
    outputs["prediction"] = str(target)
    if probabilities:
        ptarget = out_dir / f"{stem}_probs.tif"
        with atomic_path(ptarget) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(tmp, "w", driver="GTiff", width=scene.width, height=scene.height, count=K,
                               dtype="float32", compress="deflate") as dst:
                dst.write(probs)
        outputs["probabilities"] = str(ptarget)
    if overlay:
        r = scene.read(0, 0, scene.height, scene.width, labels=False)
        otarget = out_dir / f"{stem}_overlay.png"
        write_png(otarget, blend_overlay(display_rgb(r.image, r.valid), ids, colors))
        outputs["overlay"] = str(otarget)
    return outputs


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def _raster_overlay(scene: RasterScene, pred_path: Path, target: Path, colors: list[str], max_side: int) -> Path:
    """Decimated overlay of a georeferenced prediction over its image (nearest for classes)."""
    f = max(1, int(np.ceil(max(scene.height, scene.width) / max_side)))
    oh, ow = max(scene.height // f, 1), max(scene.width // f, 1)
    win = Window(scene.region.col_off, scene.region.row_off, scene.width, scene.height)
    with open_raster(scene.path) as ds:
        img = ds.read(scene.bands[:3], window=win, out_shape=(min(3, scene.count), oh, ow), resampling=Resampling.average)
        valid = ds.dataset_mask(window=win, out_shape=(oh, ow)) > 0
    with open_raster(pred_path) as ps:
        ids = ps.read(1, out_shape=(oh, ow), resampling=Resampling.nearest).astype(np.int64)
    ids[ids == NODATA_CLASS] = 0
    write_png(target, blend_overlay(display_rgb(img, valid), ids, colors))
    return target
