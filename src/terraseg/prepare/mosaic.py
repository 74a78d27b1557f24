"""Mosaicking and band stacking: many rasters onto one grid, block by block.

The output grid takes the target CRS and pixel size (default: the first tile's), covers the union
of all tiles and is aligned to the first tile's pixel grid, so tiles already on that grid are
copied bit-exactly. Tiles in another CRS, resolution or grid phase are warped by GDAL
(``rasterio.vrt.WarpedVRT`` onto the output grid, with an alpha band marking their footprint),
only for the block being written. Output blocks are processed one at a time, so a mosaic larger than
memory works; memory is bounded by ``block^2 x bands x tiles overlapping one block``.

Overlaps are resolved by a named rule, as in ``rasterio.merge``: ``first`` (earliest tile wins),
``last``, ``min`` or ``max`` of the valid values.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.transform import Affine, array_bounds
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window
from shapely import STRtree
from shapely.geometry import box

from terraseg import progress
from terraseg.config.prep import MosaicConfig
from terraseg.data.windows import grid_windows, row_strips
from terraseg.errors import ConfigError, InputFileError
from terraseg.io.outputs import color_interpretation, create_raster
from terraseg.io.raster import open_raster, open_reader, read_window, valid_mask

log = logging.getLogger(__name__)


@dataclass
class MosaicResult:
    """The written mosaic: path, size (pixels), CRS, transform and the tiles it merged."""

    path: Path
    width: int
    height: int
    crs: CRS
    transform: Affine
    tiles: int


@dataclass
class _Tile:
    path: str
    count: int
    dtype: str
    nodata: float | None
    crs: CRS
    transform: Affine
    width: int
    height: int
    bounds: tuple[float, float, float, float]  # in the target CRS


def _describe(paths: list[str], dst_crs: CRS | None) -> list[_Tile]:
    tiles = []
    for p in paths:
        with open_raster(p) as ds:
            if ds.crs is None:
                raise InputFileError(f"{p}: tile has no CRS, so it cannot be placed in a mosaic.")
            crs = dst_crs or ds.crs
            b = ds.bounds if ds.crs == crs else transform_bounds(ds.crs, crs, *ds.bounds, densify_pts=21)
            tiles.append(_Tile(p, ds.count, ds.dtypes[0], ds.nodata, ds.crs, ds.transform, ds.width, ds.height, tuple(b)))
            dst_crs = crs
    first = tiles[0]
    for t in tiles[1:]:
        if t.count != first.count:
            raise InputFileError(
                f"{t.path}: tile has {t.count} bands but {first.path} has {first.count}; a mosaic needs one band count."
            )
    return tiles


def output_grid(tiles: list[_Tile], cfg: MosaicConfig, dst_crs: CRS) -> tuple[Affine, int, int]:
    """Transform and size of the mosaic: union of tile bounds, aligned to the first tile's pixel grid.

    Args:
        tiles: the opened tiles.
        cfg: mosaic options (target resolution in CRS units).
        dst_crs: the output CRS.

    Returns:
        ``(transform, width, height)``: the output affine and size in pixels.
    """
    f = tiles[0]
    if cfg.resolution is not None:
        rx, ry = cfg.resolution
    elif f.crs == dst_crs:
        rx, ry = f.transform.a, -f.transform.e
    else:
        t, _, _ = calculate_default_transform(f.crs, dst_crs, f.width, f.height, *array_bounds(f.height, f.width, f.transform))
        rx, ry = t.a, -t.e
    if f.transform.b or f.transform.d:
        raise InputFileError(f"{f.path}: rotated rasters are not supported in a mosaic; warp it north-up first.")
    # origin: the first tile's corner when it is on the target grid, else the union's corner
    x0, y0 = (f.transform.c, f.transform.f) if f.crs == dst_crs else (f.bounds[0], f.bounds[3])
    minx = min(t.bounds[0] for t in tiles)
    miny = min(t.bounds[1] for t in tiles)
    maxx = max(t.bounds[2] for t in tiles)
    maxy = max(t.bounds[3] for t in tiles)
    eps = 1e-6
    left = x0 + math.floor((minx - x0) / rx + eps) * rx
    top = y0 - math.floor((y0 - maxy) / ry + eps) * ry
    width = max(1, math.ceil((maxx - left) / rx - eps))
    height = max(1, math.ceil((top - miny) / ry - eps))
    return Affine(rx, 0, left, 0, -ry, top), width, height


def _aligned(t: _Tile, dst_crs: CRS, tr: Affine) -> tuple[int, int] | None:
    """Pixel offset (row, col) of an unwarped tile in the mosaic grid, or None when it needs warping."""
    if t.crs != dst_crs or t.transform.b or t.transform.d:
        return None
    if not (math.isclose(t.transform.a, tr.a, rel_tol=1e-9) and math.isclose(t.transform.e, tr.e, rel_tol=1e-9)):
        return None
    col = (t.transform.c - tr.c) / tr.a
    row = (t.transform.f - tr.f) / tr.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(row)), int(round(col))


class _TileReader:
    """Reads one tile's pixels on a window of the mosaic grid, with its validity mask."""

    def __init__(self, t: _Tile, dst_crs: CRS, tr: Affine, width: int, height: int, cfg: MosaicConfig) -> None:
        self.t = t
        self.offset = _aligned(t, dst_crs, tr)
        self.ds = open_reader(t.path)
        self.vrt = None
        if self.offset is None:
            self.vrt = WarpedVRT(
                self.ds,
                crs=dst_crs,
                transform=tr,
                width=width,
                height=height,
                add_alpha=True,
                resampling=Resampling[cfg.resampling],
                src_nodata=t.nodata,
            )

    def read(self, w: Window) -> tuple[np.ndarray, np.ndarray]:
        try:
            if self.vrt is not None:
                data = self.vrt.read(window=w)
                return data[:-1], data[-1] > 0
            r0, c0 = self.offset  # type: ignore[misc]
            tile_w = Window(w.col_off - c0, w.row_off - r0, w.width, w.height)
            data = read_window(self.ds, tile_w, path=self.t.path)
        except RasterioError as e:
            raise InputFileError(
                f"{self.t.path}: pixel data cannot be read, the tile is corrupt ({str(e).splitlines()[0]})."
            ) from None
        valid = valid_mask(data, self.t.nodata)
        ro, co = int(tile_w.row_off), int(tile_w.col_off)
        rr0, cc0 = max(-ro, 0), max(-co, 0)
        rr1, cc1 = max(min(valid.shape[0], self.t.height - ro), 0), max(min(valid.shape[1], self.t.width - co), 0)
        inside = np.zeros(valid.shape, dtype=bool)
        inside[rr0:rr1, cc0:cc1] = True
        return data, valid & inside

    def close(self) -> None:
        if self.vrt is not None:
            self.vrt.close()
        self.ds.close()


def merge_block(out: np.ndarray, filled: np.ndarray, data: np.ndarray, valid: np.ndarray, rule: str) -> None:
    """Merge one tile's ``(C, h, w)`` pixels into ``out`` in place, following ``rule``.

    Args:
        out: ``(C, h, w)`` mosaic block.
        filled: ``(h, w)`` bool, pixels already holding a value.
        data: the tile's pixels on the same window.
        valid: ``(h, w)`` bool, the tile's valid pixels.
        rule: 'first', 'last', 'min' or 'max'.
    """
    new = valid & ~filled
    if rule == "first":
        np.copyto(out, data, where=new[None])
    elif rule == "last":
        np.copyto(out, data, where=valid[None])
    else:
        op = np.minimum if rule == "min" else np.maximum
        np.copyto(out, op(out, data), where=(valid & filled)[None])
        np.copyto(out, data, where=new[None])
    filled |= valid


def mosaic(cfg: MosaicConfig) -> MosaicResult:
    """Merge ``cfg.inputs`` into one GeoTIFF (optionally Cloud-Optimized), block by block.

    Args:
        cfg: :class:`terraseg.config.prep.MosaicConfig` (inputs, output, CRS, resolution in CRS units, overlap rule, codec, COG).

    Returns:
        The written :class:`MosaicResult`.

    Raises:
        InputFileError: a missing, corrupt or CRS-less tile, or tiles with different band counts.
        ConfigError: an unusable target CRS.
    """
    try:
        dst_crs = CRS.from_user_input(cfg.crs) if cfg.crs else None
    except Exception:
        raise ConfigError(f"mosaic: target CRS '{cfg.crs}' is not a CRS GDAL knows.") from None
    tiles = _describe(list(cfg.inputs), dst_crs)
    dst_crs = dst_crs or tiles[0].crs
    tr, width, height = output_grid(tiles, cfg, dst_crs)
    dtype = np.result_type(*[t.dtype for t in tiles]).name
    nodata = cfg.nodata if cfg.nodata is not None else (tiles[0].nodata if tiles[0].nodata is not None else 0)
    tree = STRtree([box(*t.bounds) for t in tiles])
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=tiles[0].count,
        dtype=dtype,
        crs=dst_crs,
        transform=tr,
        nodata=nodata,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        BIGTIFF="IF_SAFER",
    )
    if cfg.compress != "none":
        profile["compress"] = cfg.compress
    out_path = Path(cfg.out)
    readers: dict[int, _TileReader] = {}
    with contextlib.ExitStack() as stack:

        def close_readers() -> None:
            for r in readers.values():
                r.close()

        stack.callback(close_readers)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            max_bytes = int(cfg.max_output_gb * 1e9) if cfg.max_output_gb else None
            windows = list(grid_windows(height, width, cfg.block, edge="clip"))
            with (
                create_raster(out_path, cog=cfg.cog, max_bytes=max_bytes, **profile) as dst,
                progress.task(f"mosaic {out_path.name}", len(windows), "blocks") as advance,
            ):
                for r0, c0, h, wd in windows:
                    advance(1)
                    w = Window(c0, r0, wd, h)
                    wt = tr @ Affine.translation(c0, r0)
                    hits = sorted(int(i) for i in tree.query(box(*array_bounds(h, wd, wt))))
                    block = np.full((tiles[0].count, h, wd), nodata, dtype=dtype)
                    filled = np.zeros(block.shape[1:], dtype=bool)
                    for i in hits:
                        if cfg.rule == "first" and filled.all():
                            break  # nothing left for later tiles
                        if i not in readers:
                            readers[i] = _TileReader(tiles[i], dst_crs, tr, width, height, cfg)
                        data, valid = readers[i].read(w)
                        merge_block(block, filled, data.astype(dtype, copy=False), valid, cfg.rule)
                    dst.write(block, window=w)
    log.info("mosaic %s: %dx%d pixels from %d tiles", out_path, width, height, len(tiles))
    return MosaicResult(out_path, width, height, dst_crs, tr, len(tiles))


def stack_bands(inputs: list[str], out: str, compress: str = "deflate", block: int = 1024) -> Path:
    """Stack single- or multi-band rasters on one grid into one multi-band GeoTIFF (in input order).

    All inputs must share the first input's grid (CRS, transform, size), as the per-colour files of
    a SpaceNet scene do. Band descriptions keep each input's file stem.

    Args:
        inputs: rasters on one grid, stacked in this order.
        out: output GeoTIFF.
        compress: GDAL codec ('none' for none).
        block: rows copied at a time (memory is bounded by one block).

    Returns:
        ``out`` as a Path.

    Raises:
        InputFileError: a missing/unreadable input, or one on another grid.
    """
    infos = []
    for p in inputs:
        with open_raster(p) as ds:
            infos.append((p, ds.count, ds.dtypes[0], ds.crs, ds.transform, ds.width, ds.height, ds.nodata))
    f = infos[0]
    for p, _, _, crs, t, w, h, _ in infos[1:]:
        if (w, h) != (f[5], f[6]) or crs != f[3] or not t.almost_equals(f[4]):
            raise InputFileError(f"{p}: not on the grid of {f[0]} (CRS, transform and size must match to stack bands).")
    count = sum(i[1] for i in infos)
    dtype = np.result_type(*[i[2] for i in infos]).name
    profile = dict(
        driver="GTiff",
        width=f[5],
        height=f[6],
        count=count,
        dtype=dtype,
        crs=f[3],
        transform=f[4],
        nodata=f[7],
        BIGTIFF="IF_SAFER",
    )
    if compress != "none":
        profile["compress"] = compress
    if f[5] >= 256 and f[6] >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with create_raster(out, **profile) as dst:
        band = 1
        for p, n, *_ in infos:
            with open_raster(p) as ds:
                for s in row_strips(f[6], f[5], block):
                    w = Window(0, s.row, s.width, s.height)
                    dst.write(read_window(ds, w, path=p).astype(dtype, copy=False), indexes=list(range(band, band + n)), window=w)
            for k in range(n):
                dst.set_band_description(band + k, Path(p).stem if n == 1 else f"{Path(p).stem}:{k + 1}")
            band += n
        dst.colorinterp = color_interpretation(count, list(dst.descriptions))
    return Path(out)
