"""Chipping: cut scenes and their labels into fixed-size chips, with a georeferenced index.

Windows step by ``stride`` from the top-left corner. The last row and column either extend past the
scene edge (``edge='pad'``: padded with nodata, masks with ``ignore_index``) or are shifted flush
inside it (``edge='shift'``), so no pixel is ever dropped. Each GeoTIFF chip carries its own
transform (the scene transform composed with the window offset) and the scene's CRS and nodata;
where padding was added to a raster without a nodata value, the chip gets a GDAL internal mask.

The index (GeoParquet by default, CSV with WKT geometry as an option) lists one row per written
chip: paths, source scene, window, bounds in the scene CRS (for a raster without a geotransform: pixel bounds, x = column and y = row, with CRS null), CRS, nodata share and per-class pixel
counts, i.e. what ``terraseg split`` and a training config need. Chips are read and written by a
small thread pool: rasterio/GDAL release the GIL during I/O and (de)compression.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rasterio.crs import CRS
from shapely.geometry import box

from terraseg import progress
from terraseg.config.prep import ChipConfig
from terraseg.data.rasters import RasterScene
from terraseg.data.scenes import Scene
from terraseg.data.sources import labelled_scene, labels_for
from terraseg.data.windows import grid_windows
from terraseg.errors import ConfigError
from terraseg.io.atomic import atomic_path
from terraseg.io.images import write_png
from terraseg.io.outputs import create_raster, georef_options

log = logging.getLogger(__name__)


@dataclass
class ChipResult:
    """What :func:`chip` wrote.

    Attributes:
        index_path: the index file.
        written: chips written.
        skipped: windows skipped (nodata share or
        no positive class).
        seconds: wall time.
        source_bytes: bytes of source pixels read.
    """

    index_path: Path
    written: int
    skipped: int
    seconds: float
    source_bytes: int

    @property
    def mb_per_second(self) -> float:
        """Source pixels chipped per second, in MB (10^6 bytes)."""
        return self.source_bytes / 1e6 / max(self.seconds, 1e-9)


def _chip_profile(scene: Scene, count: int, dtype: str, size: int, row: int, col: int, nodata, compress: str) -> dict[str, Any]:
    """A chip's creation options: the scene's CRS and window transform, or its GCPs/RPCs moved to the window."""
    grid = scene.window_grid(row, col, size, size) if isinstance(scene, RasterScene) else None
    profile: dict[str, Any] = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=count,
        dtype=dtype,
        nodata=nodata,
        crs=scene.crs if grid is None or grid.georeferenced else None,
        transform=scene.window_transform(row, col),
    )
    if grid is not None and not grid.georeferenced:
        profile.update(georef_options(grid.gcps, grid.rpcs))
    if compress != "none":
        profile["compress"] = compress
    if size % 16 == 0 and size >= 128:
        profile.update(tiled=True, blockxsize=min(size, 256), blockysize=min(size, 256))
    return profile


class _SceneChipper:
    """Reads and writes the chips of one scene; one clone of the scene per worker thread."""

    def __init__(self, scene: Scene, cfg: ChipConfig, out: Path, fmt: str, names: list[str]) -> None:
        self.scene, self.cfg, self.out, self.fmt, self.names = scene, cfg, out, fmt, names
        self._local: dict[int, Scene] = {}

    def _scene(self, worker: int) -> Scene:
        if worker not in self._local:
            s = copy.copy(self.scene)
            if isinstance(s, RasterScene):
                s._ds = None  # rasterio datasets are not shared between threads
            self._local[worker] = s
        return self._local[worker]

    def __call__(self, job: tuple[int, int, int]) -> dict[str, Any] | None:
        worker, row, col = job
        cfg, size = self.cfg, self.cfg.size
        scene = self._scene(worker)
        r = scene.read(row, col, size, size)
        nodata_share = 1.0 - float(r.valid.mean())
        if nodata_share > cfg.max_nodata:
            return None
        counts = np.zeros(0, dtype=np.int64)
        if r.mask is not None:
            known = r.mask[r.mask != cfg.ignore_index]
            counts = np.bincount(known.ravel(), minlength=len(self.names) or 2)
            if self.names and len(counts) > len(self.names):
                raise ConfigError(
                    f"{scene.path}: labels hold class {len(counts) - 1} but only {len(self.names)} class names were given."
                )
            if cfg.skip_empty and counts[1:].sum() == 0:
                return None
        elif cfg.skip_empty:
            raise ConfigError(f"{scene.path}: skip_empty needs labels for every image.")
        stem = f"{scene.name}_{row:05d}_{col:05d}"
        image_path = self.out / "images" / f"{stem}.{self.fmt}"
        mask_path = self.out / "masks" / f"{stem}.{self.fmt}" if r.mask is not None else None
        padded = nodata_share > 0 and not r.valid.all()
        if self.fmt == "tif":
            nodata = scene.nodata
            with create_raster(
                image_path, **_chip_profile(scene, r.image.shape[0], r.image.dtype.name, size, row, col, nodata, cfg.compress)
            ) as dst:
                dst.write(r.image)
                if padded and nodata is None:
                    dst.write_mask(r.valid.astype(np.uint8) * 255)
            if mask_path is not None:
                with create_raster(
                    mask_path, **_chip_profile(scene, 1, "uint8", size, row, col, cfg.ignore_index, cfg.compress)
                ) as dst:
                    dst.write(np.asarray(r.mask, np.uint8), 1)
        else:
            write_png(image_path, r.image)
            if mask_path is not None:
                write_png(mask_path, np.asarray(r.mask, np.uint8))
        if scene.grid.georeferenced:
            minx, miny, maxx, maxy = scene.window_bounds(row, col, size, size)
        else:  # no geotransform: pixel bounds (x = column, y = row), crs null
            minx, miny, maxx, maxy = float(col), float(row), float(col + size), float(row + size)
        rec: dict[str, Any] = {
            "chip": str(image_path.relative_to(self.out)),
            "mask": str(mask_path.relative_to(self.out)) if mask_path else None,
            "scene": scene.path,
            "row": row,
            "col": col,
            "height": size,
            "width": size,
            "minx": minx,
            "miny": miny,
            "maxx": maxx,
            "maxy": maxy,
            "crs": scene.crs.to_string() if scene.crs and scene.grid.georeferenced else None,
            "nodata_fraction": round(nodata_share, 6),
        }
        for k, n in enumerate(counts):
            rec[f"px_{self.names[k] if self.names else f'c{k}'}"] = int(n)
        return rec


def chip(cfg: ChipConfig) -> ChipResult:
    """Cut every image of ``cfg`` (and its labels) into chips and write the index.

    Args:
        cfg: chipping options (:class:`terraseg.config.prep.ChipConfig`).

    Chips are written into a hidden staging folder inside ``cfg.out_dir`` and moved into
    ``images/`` and ``masks/`` only when every scene succeeded, then the index is written: a run
    that fails part-way (a corrupt scene, SIGTERM) leaves no chip that a later step would take as a
    result.

    Returns:
        A :class:`ChipResult`; the index lists only the chips written.

    Raises:
        InputFileError: unreadable images or labels, labels not overlapping their image.
        ConfigError: inconsistent options (e.g. ``skip_empty`` without labels), or two images with one
            file stem (their chips would overwrite each other).
    """
    t0 = time.perf_counter()
    out = Path(cfg.out_dir)
    stride = cfg.stride or cfg.size
    scenes = [
        labelled_scene(img, lab, cfg.bands, cfg.ignore_index) for img, lab in zip(cfg.images, labels_for(cfg.images, cfg.labels))
    ]
    seen: dict[str, str] = {}
    for s in scenes:
        if s.name in seen:
            raise ConfigError(
                f"{seen[s.name]} and {s.path} share the stem '{s.name}', so their chips would overwrite each other; "
                "chip them into different --out folders."
            )
        seen[s.name] = s.path
    names = list(cfg.class_names or [])
    records: list[dict[str, Any]] = []
    skipped = 0
    source_bytes = 0
    workers = cfg.workers or (os.cpu_count() or 1) + 1
    staging = out / f".chip-{uuid.uuid4().hex[:12]}"
    try:
        skipped, source_bytes = _chip_scenes(scenes, cfg, staging, names, stride, workers, records)
        for rec in records:  # every scene succeeded: move the chips into place
            for key in ("chip", "mask"):
                if rec.get(key):
                    (out / rec[key]).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staging / rec[key], out / rec[key])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    records.sort(key=lambda r: (r["scene"], r["row"], r["col"]))
    index_path = write_index(records, out / f"index.{cfg.index_format}")
    seconds = time.perf_counter() - t0
    log.info("%d chips written, %d skipped in %.1f s", len(records), skipped, seconds)
    return ChipResult(index_path, len(records), skipped, seconds, source_bytes)


def _chip_scenes(
    scenes: list[Scene], cfg: ChipConfig, out: Path, names: list[str], stride: int, workers: int, records: list[dict[str, Any]]
) -> tuple[int, int]:
    """Write the chips of every scene under ``out``, appending their records; returns (skipped, source bytes)."""
    skipped = source_bytes = 0
    with ThreadPoolExecutor(workers) as pool:
        for scene in scenes:
            fmt = cfg.format if cfg.format != "auto" else ("tif" if isinstance(scene, RasterScene) else "png")
            if fmt == "png" and np.dtype(scene.dtype) not in (np.uint8, np.uint16):
                raise ConfigError(f"{scene.path}: {scene.dtype} pixels cannot be written as PNG chips; use format 'tif'.")
            if fmt == "png" and scene.count not in (1, 3):
                raise ConfigError(
                    f"{scene.path}: {scene.count}-band PNG chips would show band 4 as transparency (RGBA); use format 'tif'."
                )
            worker = _SceneChipper(scene, cfg, out, fmt, names)
            windows = [(w.row, w.col) for w in grid_windows(scene.height, scene.width, cfg.size, stride, cfg.edge)]
            # one task per worker id, so each thread keeps its own clone of the scene (its own datasets)
            per_worker = [[(w, r, c) for r, c in windows[w::workers]] for w in range(workers)]
            with progress.task(f"chip {Path(scene.path).name}", len(windows), "chips") as advance:

                def run(js: list, advance=advance) -> list:
                    done = []
                    for j in js:
                        done.append(worker(j))
                        advance(1)
                    return done

                for res in pool.map(run, per_worker):
                    for rec in res:
                        if rec is None:
                            skipped += 1
                        else:
                            records.append(rec)
            source_bytes += scene.height * scene.width * scene.count * np.dtype(scene.dtype).itemsize
    return skipped, source_bytes


def write_index(records: list[dict[str, Any]], path: Path) -> Path:
    """Write chip records as GeoParquet (``.parquet``) or CSV with a WKT ``geometry`` column.

    The geometry is each chip's footprint. When all chips share one CRS it is in that CRS (stored in
    the GeoParquet metadata); chips of scenes in different CRSs get EPSG:4326 footprints, and their
    native bounds stay in ``minx..maxy`` with ``crs`` per row. Written atomically.

    Args:
        records: one dict per written chip (paths, scene, window in pixels, bounds in CRS units, CRS, counts).
        path: target ``.parquet`` or ``.csv``.

    Returns:
        ``path``.

    Raises:
        OutputError: the folder cannot be written.
    """
    import geopandas as gpd

    df = (
        pd.DataFrame.from_records(records)
        if records
        else pd.DataFrame(
            columns=[
                "chip",
                "mask",
                "scene",
                "row",
                "col",
                "height",
                "width",
                "minx",
                "miny",
                "maxx",
                "maxy",
                "crs",
                "nodata_fraction",
            ]
        )
    )
    px = [c for c in df.columns if c.startswith("px_")]
    df[px] = df[px].fillna(0).astype("int64")  # classes absent from some scenes
    geoms = [box(r["minx"], r["miny"], r["maxx"], r["maxy"]) for r in records]
    crss = {r["crs"] for r in records} - {None}
    if len(crss) <= 1:
        gdf = gpd.GeoDataFrame(df, geometry=geoms, crs=next(iter(crss)) if crss else None)
    else:
        parts = []
        for c in sorted(crss):
            sel = (df["crs"] == c).to_numpy()
            part = gpd.GeoDataFrame(df[sel], geometry=[g for g, s in zip(geoms, sel) if s], crs=CRS.from_user_input(c))
            parts.append(part.to_crs("EPSG:4326"))
        gdf = gpd.GeoDataFrame(pd.concat(parts).loc[df.index], crs="EPSG:4326")
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            gdf.to_parquet(tmp, index=False)
        else:
            out = pd.DataFrame(gdf.drop(columns="geometry"))
            out["geometry"] = gdf.geometry.to_wkt()
            out.to_csv(tmp, index=False)
    return path


def read_index(path: str | Path) -> pd.DataFrame:
    """Read a chip index (GeoParquet or CSV) into a (Geo)DataFrame.

    Args:
        path: a ``terraseg chip`` index (``.parquet`` or ``.csv``).

    Returns:
        The index; a GeoDataFrame when it holds geometries.

    Raises:
        InputFileError: missing or unreadable index, or one without the chip columns.
    """
    import geopandas as gpd

    from terraseg.errors import InputFileError

    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: chip index not found.")
    try:
        if p.suffix == ".parquet":
            df = gpd.read_parquet(p)
        else:
            df = pd.read_csv(p)
            if "geometry" in df.columns:
                df = gpd.GeoDataFrame(df, geometry=gpd.GeoSeries.from_wkt(df["geometry"]))
    except Exception as e:  # pyarrow / pandas parser errors all mean "not an index"
        raise InputFileError(f"{p}: not a readable chip index ({str(e).splitlines()[0]}).") from None
    missing = {"chip", "scene", "minx", "miny", "maxx", "maxy"} - set(df.columns)
    if missing:
        raise InputFileError(f"{p}: not a chip index (missing columns {', '.join(sorted(missing))}).")
    return df
