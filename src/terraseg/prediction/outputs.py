"""Prediction outputs: class-id GeoTIFF/PNG and probability raster (through the one writer in
:mod:`terraseg.io.predictions`) and colour overlays (drawn by :mod:`terraseg.io.render`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from terraseg import progress
from terraseg.config.inference import PredictConfig
from terraseg.data.rasters import RasterScene
from terraseg.data.scenes import Scene
from terraseg.infer.sliding import SlidingWindowPredictor
from terraseg.io.images import write_png
from terraseg.io.predictions import PredictionWriter, class_encoding, write_prediction
from terraseg.io.raster import open_raster
from terraseg.io.render import blend_overlay, display_rgb


def predict_to_files(
    predictor: SlidingWindowPredictor,
    scene: Scene,
    out_dir: Path,
    class_names: list[str],
    colors: list[str],
    probabilities: bool = False,
    overlay: bool = False,
    compress: str = "deflate",
    cog: bool = False,
    overlay_max_side: int = 2048,
    level: int | None = None,
    uncertainty: bool = False,
    stem: str | None = None,
) -> dict[str, str]:
    """Predict one scene and write its outputs under ``out_dir`` named after ``stem`` (default: the input's stem).

    Georeferenced rasters give ``<stem>.tif`` (class ids on the input's CRS, transform and size,
    encoded by :class:`terraseg.io.predictions.PredictionWriter`), streamed strip by strip; plain
    images give ``<stem>.png``. ``probabilities`` adds ``<stem>_probs.tif`` (float32, one band per
    class); ``overlay`` adds ``<stem>_overlay.png`` (the image with class colours, at most
    ``overlay_max_side`` pixels a side).

    Args:
        predictor: the sliding-window predictor.
        scene: the input.
        out_dir: output folder.
        class_names: the bundle's classes.
        colors: the bundle's classes.
        compress: GeoTIFF codec.
        cog: Cloud-Optimized GeoTIFFs.
        overlay_max_side: longest side of the overlay PNG in pixels.
        level: codec level (None: GDAL's default).
        uncertainty: also write ``<stem>_confidence.tif`` (max probability, margin, normalised entropy; GeoTIFF inputs).
        stem: output name (e.g. a STAC item id); default the input file's stem.

    Returns:
        ``{"prediction": path, "probabilities": path, "overlay": path}`` for what was written.

    Raises:
        InputFileError: unreadable pixels.
        OutputError: ``out_dir`` cannot be written.
    """
    stem = stem or Path(getattr(scene, "path", scene.name)).stem
    grid = scene.grid
    target = out_dir / f"{stem}{output_suffix(scene)}"
    conf = out_dir / f"{stem}_confidence.tif" if uncertainty and target.suffix == ".tif" else None
    writer = PredictionWriter(
        target,
        grid,
        class_names,
        colors,
        out_dir / f"{stem}_probs.tif" if probabilities else None,
        compress=compress,
        level=level,
        cog=cog,
        confidence=conf,
    )

    def sink(b) -> None:
        writer.write(b.row, 0, b.encoded, b.probs, confidence=b.confidence)
        advance(b.encoded.shape[0])

    with writer, progress.task(f"predict {Path(getattr(scene, 'path', scene.name)).name}", scene.height, "rows") as advance:
        predictor.predict(scene, sink, probabilities=probabilities, confidence=conf is not None)
    outputs = {k: str(v) for k, v in writer.paths.items()}
    if overlay:
        outputs["overlay"] = str(write_overlay(scene, target, out_dir / f"{stem}_overlay.png", colors, overlay_max_side))
    return outputs


def output_suffix(scene: Scene) -> str:
    """The prediction's suffix: '.png' for PNG/JPEG/BMP inputs (small photos), '.tif' for every raster.

    A raster's prediction is a GeoTIFF with the input's transform, GCPs or RPCs, or a plain TIFF for a
    raster without georeferencing (a .tif or .jp2 chip without a geotransform).

    Args:
        scene: the input scene (its ``path`` decides).
    """
    from terraseg.formats import is_photo

    return ".png" if is_photo(getattr(scene, "path", "")) else ".tif"


def arrays_to_files(
    scene: Scene, ids: np.ndarray, probs: np.ndarray, cfg: PredictConfig, classes: list, stem: str
) -> dict[str, str]:
    """Write an in-memory prediction of a small scene exactly as :func:`predict_to_files` streams a large one.

    Args:
        scene: the predicted scene.
        ids: ``(H, W)`` class ids, -1 for nodata.
        probs: ``(K, H, W)`` float32.
        cfg: the predict config (``out_dir``, ``probabilities``, ``overlay``, ``compress``, ``level``, ``cog``).
        classes: the bundle's classes (names and colours, :class:`terraseg.config.ClassSpec`).
        stem: output name.

    Returns:
        ``{"prediction": path, "probabilities": path, "overlay": path}`` for what was written.

    Raises:
        OutputError: ``out_dir`` cannot be written.
    """
    out_dir, colors = Path(cfg.out_dir), [c.color for c in classes]
    grid = scene.grid
    target = out_dir / f"{stem}{output_suffix(scene)}"
    paths = write_prediction(
        target,
        grid,
        ids,
        [c.name for c in classes],
        colors,
        probs if cfg.probabilities else None,
        out_dir / f"{stem}_probs.tif",
        compress=cfg.compress,
        level=cfg.level,
        cog=cfg.cog,
    )
    outputs = {k: str(v) for k, v in paths.items()}
    if cfg.overlay:
        outputs["overlay"] = str(write_overlay(scene, target, out_dir / f"{stem}_overlay.png", colors))
    return outputs


def complete_outputs(
    out_dir: Path, stem: str, probabilities: bool = False, overlay: bool = False, uncertainty: bool = False
) -> dict[str, str] | None:
    """The outputs :func:`predict_to_files` writes for ``stem``, when all of them already exist, else None.

    Every output is written under a temporary name and renamed when whole, so an existing file is a
    complete one (``predict --resume``).

    Args:
        out_dir: output folder.
        stem: output name.
        probabilities: the extras asked for.
        overlay: the extras asked for.
        uncertainty: the extras asked for.
    """
    tif, png = out_dir / f"{stem}.tif", out_dir / f"{stem}.png"
    found = {"prediction": tif if tif.is_file() else png}
    if probabilities:
        found["probabilities"] = out_dir / f"{stem}_probs.tif"
    if uncertainty and tif.is_file():
        found["confidence"] = out_dir / f"{stem}_confidence.tif"
    if overlay:
        found["overlay"] = out_dir / f"{stem}_overlay.png"
    return {k: str(v) for k, v in found.items()} if all(p.is_file() for p in found.values()) else None


def _overlay_base(scene: Scene, max_side: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The image part of an overlay: ``(C<=3, oh, ow)`` pixels, ``(oh, ow)`` validity, and the decimation factor."""
    f = max(1, int(np.ceil(max(scene.height, scene.width) / max_side)))
    oh, ow = max(scene.height // f, 1), max(scene.width // f, 1)
    if isinstance(scene, RasterScene):
        win = Window(scene.region.col_off, scene.region.row_off, scene.width, scene.height)
        with open_raster(scene.path) as ds:
            img = ds.read(scene.bands[:3], window=win, out_shape=(min(3, scene.count), oh, ow), resampling=Resampling.average)
            valid = ds.dataset_mask(window=win, out_shape=(oh, ow)) > 0
    else:
        r = scene.read(0, 0, scene.height, scene.width, labels=False)
        img, valid = r.image[:3, ::f, ::f][:, :oh, :ow], r.valid[::f, ::f][:oh, :ow]
    return img, valid, f


def write_overlay(scene: Scene, prediction: Path, target: Path, colors: list[str], max_side: int = 2048) -> Path:
    """Class colours over the image, decimated to at most ``max_side`` pixels a side (nearest for classes).

    Args:
        scene: the predicted scene.
        prediction: its class-id raster (``.tif`` or ``.png``).
        target: PNG to write.
        colors: class colours.

    Returns:
        ``target``.

    Raises:
        InputFileError: unreadable image or prediction.
        OutputError: ``target`` cannot be written.
    """
    nodata = class_encoding(len(colors))[1]
    img, valid, _ = _overlay_base(scene, max_side)
    with open_raster(prediction) as ps:
        ids = ps.read(1, out_shape=valid.shape, resampling=Resampling.nearest).astype(np.int64)
    ids[ids == nodata] = 0
    write_png(target, blend_overlay(display_rgb(img, valid), ids, colors))
    return target


def write_grid_overlay(
    scene: Scene, class_grid: np.ndarray, window: int, target: Path, colors: list[str], max_side: int = 2048
) -> Path:
    """Class colours of a classification grid over the image, decimated to at most ``max_side`` pixels a side.

    Each overlay pixel takes the class of the grid window holding the scene pixel it samples, so the colours
    sit exactly over their windows (the grid's padded edge windows are cut at the scene's edge).

    Args:
        scene: the classified scene.
        class_grid: ``(rows, cols)`` class ids, negative for empty windows.
        window: the grid's window side in scene pixels.
        target: PNG to write.
        colors: class colours.

    Returns:
        ``target``.

    Raises:
        InputFileError: unreadable image.
        OutputError: ``target`` cannot be written.
    """
    img, valid, f = _overlay_base(scene, max_side)
    oh, ow = valid.shape
    rows = np.minimum(np.arange(oh) * f // window, class_grid.shape[0] - 1)
    cols = np.minimum(np.arange(ow) * f // window, class_grid.shape[1] - 1)
    ids = class_grid[rows[:, None], cols[None, :]]
    valid = valid & (ids >= 0)
    write_png(target, blend_overlay(display_rgb(img, valid), np.maximum(ids, 0), colors))
    return target
