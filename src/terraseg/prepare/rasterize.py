"""Rasterize polygon labels into a mask GeoTIFF on an image's grid, window by window.

Polygons in any CRS are reprojected to the image CRS and burnt with ``rasterio.features.rasterize``
(GDAL's rasterizer), per block with a spatial index, so the mask of a scene of any size is written
without holding it in memory. Burn order: class polygons in file order (later features win), then
polygon outlines (``boundary_class``, the "contact" class used to separate touching buildings, as in
the SpaceNet and Raster Vision building pipelines), then ignore zones, then the image's nodata
pixels (``ignore_index``).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from terraseg import progress
from terraseg.config.prep import RasterizeConfig
from terraseg.data.windows import grid_windows
from terraseg.errors import ConfigError, InputFileError
from terraseg.io.outputs import create_raster, geotiff_profile
from terraseg.io.raster import info_of, open_raster, read_window, valid_mask
from terraseg.io.vector import VectorRasterizer, labels_in_crs

log = logging.getLogger(__name__)


def rasterize_labels(cfg: RasterizeConfig) -> Path:
    """Write ``cfg.out``: a uint8 mask on the grid of ``cfg.reference`` with nodata ``ignore_index``.

    Args:
        cfg: :class:`terraseg.config.prep.RasterizeConfig` (vector labels, reference image, class mapping, outlines, ignore zones).

    Returns:
        The mask path.

    Raises:
        InputFileError: unreadable image or labels, labels with no overlap with the image, class
            values with no mapping, or class ids that do not fit in uint8.
        ConfigError: inconsistent options.
    """
    ref = Path(cfg.reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with open_raster(ref) as ds:
            info = info_of(ds, str(ref))
    vec = cfg.vector
    vpath = Path(vec.path)
    classes = VectorRasterizer(vec, info, str(ref))
    bad = classes.values[(classes.values < 0) | (classes.values > 255)]
    if bad.size:
        raise InputFileError(f"{vpath}: class id {int(bad[0])} does not fit in a uint8 mask (0-255).")
    if cfg.background == cfg.ignore_index:
        raise ConfigError("background and ignore_index must differ.")
    outlines = None
    if cfg.boundary_width > 0:
        half = cfg.boundary_width * abs(info.transform.a) / 2.0  # pixels -> CRS units
        rings = [g.boundary.buffer(half, cap_style="flat", join_style="mitre") for g in classes.geoms]
        outlines = VectorRasterizer.from_geometries(rings, [cfg.boundary_class] * len(rings), info.transform, True)
    zones = None
    if cfg.ignore:
        ipath = Path(cfg.ignore)
        zgdf = labels_in_crs(ipath, info.crs, None, str(ref))
        zones = VectorRasterizer.from_geometries(zgdf.geometry.to_numpy(), [cfg.ignore_index] * len(zgdf), info.transform, True)
    profile = geotiff_profile(info, 1, "uint8", cfg.ignore_index)
    counts = np.zeros(256, dtype=np.int64)
    with (
        open_raster(ref) as src,
        create_raster(cfg.out, **profile) as dst,
        progress.task(f"rasterize {Path(cfg.out).name}", info.height * info.width, "px") as advance,
    ):
        for r0, c0, h, w in grid_windows(info.height, info.width, cfg.block, edge="clip"):
            advance(h * w)
            mask = classes.rasterize(r0, c0, h, w, fill=cfg.background)
            if outlines is not None:
                edge = outlines.rasterize(r0, c0, h, w, fill=-1)
                mask[edge >= 0] = cfg.boundary_class
            if zones is not None:
                zone = zones.rasterize(r0, c0, h, w, fill=-1)
                mask[zone >= 0] = cfg.ignore_index
            if info.nodata is not None or np.issubdtype(np.dtype(info.dtype), np.floating):
                valid = valid_mask(read_window(src, Window(c0, r0, w, h), path=str(ref)), info.nodata)
                mask[~valid] = cfg.ignore_index
            counts += np.bincount(mask.ravel(), minlength=256)[:256]
            dst.write(mask.astype(np.uint8), 1, window=Window(c0, r0, w, h))
        dst.update_tags(**{f"pixels_class_{k}": int(n) for k, n in enumerate(counts) if n})
    log.info("rasterized %d polygons from %s onto %s", len(classes.geoms), vpath, ref)
    return Path(cfg.out)
