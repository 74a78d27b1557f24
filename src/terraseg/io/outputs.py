"""Raster outputs: GeoTIFF profiles (tiling, codec, georeferencing), the output-size check, atomic creation and
colour interpretation; every raster terraseg writes is created here."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import RasterioIOError

from terraseg.io.raster import Grid, RasterInfo, _first_line

log = logging.getLogger(__name__)


def georef_options(gcps: tuple | None, rpcs: Any) -> dict[str, Any]:
    """rasterio write options that keep a raster's GCPs (with their CRS) or RPCs: the prediction lands where the input does.

    Args:
        gcps: ``(points, crs)`` or None.
        rpcs: rasterio ``RPC`` or None.

    Returns:
        ``{"gcps": ..., "crs": ...}`` and/or ``{"rpcs": ...}`` (empty when neither is given).
    """
    out: dict[str, Any] = {}
    if gcps:
        out.update(gcps=gcps[0], crs=gcps[1])
    if rpcs is not None:
        out["rpcs"] = rpcs
    return out


def geotiff_profile(
    info: RasterInfo | Grid,
    count: int,
    dtype: str,
    nodata: float | None,
    block: int = 256,
    compress: str = "deflate",
    predictor: int | None = None,
) -> dict[str, Any]:
    """Creation options for a tiled, compressed GeoTIFF on a grid.

    Args:
        info: the grid (a :class:`RasterInfo` or :class:`Grid`; CRS None writes a plain TIFF).
        count: bands.
        dtype: numpy dtype name.
        nodata: nodata value or None.
        block: internal tile size in pixels (grids smaller than a tile are written in strips).
        compress: GDAL codec ('deflate', 'zstd', 'lzw', 'none').
        predictor: GDAL predictor (2: horizontal differencing for integers, 3: floating point).

    Returns:
        Keyword arguments for :func:`create_raster` / ``rasterio.open(..., "w")``.
    """
    profile: dict[str, Any] = dict(
        driver="GTiff",
        width=info.width,
        height=info.height,
        count=count,
        dtype=dtype,
        crs=info.crs,
        transform=info.transform,
        nodata=nodata,
        BIGTIFF="IF_SAFER",
    )
    profile.update(georef_options(getattr(info, "gcps", None), getattr(info, "rpcs", None)))
    if compress != "none":
        profile["compress"] = compress
        if predictor:
            profile["predictor"] = predictor
    if info.width >= block and info.height >= block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    return profile


def check_output_size(
    path: str | os.PathLike[str],
    width: int,
    height: int,
    count: int,
    dtype: str,
    compress: str | None,
    max_bytes: int | None = None,
) -> int:
    """Refuse a raster too large for its disk or for the size limit, before any of it is written.

    Args:
        path: the output file.
        width: pixels.
        height: pixels.
        count: bands.
        dtype: numpy dtype name.
        compress: the codec ('none' or None: uncompressed).
        max_bytes: the limit of the uncompressed size (default :func:`terraseg.settings.max_output_bytes`,
            ``$TERRASEG_MAX_OUTPUT_GB``).

    Returns:
        The uncompressed size in bytes.

    Raises:
        OutputError: over ``max_bytes``, or over the free space of the output's disk (uncompressed
            outputs; compressed ones when even a tenth of the size would not fit).
    """
    import shutil as _shutil

    from terraseg.errors import OutputError
    from terraseg.settings import max_output_bytes

    size = int(width) * int(height) * int(count) * np.dtype(dtype).itemsize
    limit = max_bytes if max_bytes is not None else max_output_bytes()
    what = f"{path}: the output would be {width:,} x {height:,} pixels x {count} band(s) of {dtype} = {size / 1e9:,.1f} GB uncompressed"
    if size > limit:
        raise OutputError(
            f"{what}, over the limit of {limit / 1e9:,.1f} GB; check the resolution / extent, or raise the limit "
            "(--max-output-gb, or $TERRASEG_MAX_OUTPUT_GB)."
        )
    folder = Path(path).resolve().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = _shutil.disk_usage(folder).free
    need = size if str(compress or "none").lower() == "none" else size // 10
    if need > free:
        raise OutputError(f"{what}, more than the {free / 1e9:,.1f} GB free on its disk.")
    return size


@contextlib.contextmanager
def create_raster(
    path: str | os.PathLike[str], cog: bool = False, max_bytes: int | None = None, **profile: Any
) -> Iterator[rasterio.io.DatasetWriter]:
    """Open a new raster for writing, atomically: the one way terraseg creates rasters.

    The dataset is written under a temporary name beside ``path`` and renamed onto it when the
    block exits without an error, so an interrupted run never leaves a complete-looking raster.
    Extra bands of a GeoTIFF are never marked alpha (a NIR band is data, not transparency).
    With ``cog`` the finished GeoTIFF is converted by GDAL's COG driver (overviews, same codec).

    Args:
        path: final file.
        cog: write a Cloud-Optimized GeoTIFF.
        max_bytes: largest uncompressed size (:func:`check_output_size`; default ``$TERRASEG_MAX_OUTPUT_GB``).
        **profile: rasterio creation options (``driver``, ``width``, ``height``, ``count``, ``dtype``, ``crs``,
            ``transform``, ``nodata``, codec options...).

    Yields:
        The open dataset (``rasterio`` writer).

    Raises:
        OutputError: the folder cannot be created or written (permissions, a file in the way, a full disk),
            or the raster would exceed the size limit or the free disk space (checked before writing).
    """
    from rasterio.errors import NotGeoreferencedWarning

    from terraseg.errors import OutputError
    from terraseg.io.atomic import atomic_path

    target = Path(path)
    check_output_size(
        target,
        profile.get("width", 0),
        profile.get("height", 0),
        profile.get("count", 1),
        str(profile.get("dtype", "uint8")),
        profile.get("compress"),
        max_bytes,
    )
    if str(profile.get("driver", "GTiff")).upper() == "GTIFF" and profile.get("count", 1) > 1:
        profile.setdefault("alpha", "UNSPECIFIED")  # GDAL would make band 4 of RGBN (or band 2) an alpha band
    try:
        with atomic_path(target) as tmp:
            blocks = tmp.with_name(tmp.stem + ".blocks.tif") if cog else tmp
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    with rasterio.open(blocks, "w", **profile) as dst:
                        yield dst
                if cog:
                    codec = str(profile.get("compress", "none")).upper()
                    rasterio.shutil.copy(
                        blocks,
                        tmp,
                        driver="COG",
                        compress=codec if codec != "NONE" else "NONE",
                        overviews="AUTO",
                        BIGTIFF="IF_SAFER",
                    )
            finally:
                if cog:
                    blocks.unlink(missing_ok=True)
    except RasterioIOError as e:
        raise OutputError(f"{target}: cannot write the raster ({_first_line(e)}).") from None


_RGB = {"red": 0, "r": 0, "b04": 0, "green": 1, "g": 1, "b03": 1, "blue": 2, "b": 2, "b02": 2}


def color_interpretation(count: int, names: list[str] | None = None) -> list:
    """GDAL colour interpretation for ``count`` bands, never alpha (a NIR band is not transparency).

    Args:
        count: band count.
        names: band names in order (e.g. file stems, Sentinel-2 B04/B03/B02), or None.

    Returns:
        :class:`rasterio.enums.ColorInterp` values: red/green/blue for bands named so (or, unnamed, the
        first three of a 3+ band raster), gray for a single band, undefined for the others.
    """
    from rasterio.enums import ColorInterp

    if count == 1:
        return [ColorInterp.gray]
    out = [ColorInterp.undefined] * count
    rgb = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
    if names:
        for i, n in enumerate(names[:count]):
            key = Path(str(n)).stem.lower().split(":")[0].rsplit("_", 1)[-1]
            if key in _RGB and out.count(rgb[_RGB[key]]) == 0:
                out[i] = rgb[_RGB[key]]
    elif count >= 3:
        out[:3] = rgb
    return out
