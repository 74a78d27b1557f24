"""Projects: hundreds to thousands of rasters and one labels file, with start-up and memory that do not grow with them.

* **The index, built once.** Each raster's header (size, bands, dtype, nodata, CRS, transform,
  footprint) is read once into a table, cached as GeoParquet (:func:`project_index`); a later run
  reuses every row whose file has the same size and modification time, and reads only new or changed
  files. Footprints are stored in EPSG:4326 for a map of the project.
* **Labels read once.** A vector file is read and indexed once per process
  (:class:`terraseg.io.vector.SharedLabels`); each scene takes the features inside its footprint,
  reprojected to its own CRS, so rasters in mixed CRSs share one labels file.
* **Unlabelled rasters** are skipped, or trained on as background when the user says the labels are
  complete (``unlabelled: background``).

Memory during training is bounded by the byte-limited cache of :mod:`terraseg.io.cache`, not by
the number of scenes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from terraseg.config import ProjectSource
from terraseg.data.rasters import RasterScene
from terraseg.errors import InputFileError
from terraseg.formats import is_mask_raster
from terraseg.settings import resolve_data_path

log = logging.getLogger(__name__)

COLUMNS = [
    "path",
    "size",
    "mtime",
    "width",
    "height",
    "count",
    "dtype",
    "nodata",
    "crs",
    "transform",
    "minx",
    "miny",
    "maxx",
    "maxy",
]


def _stat(path: str) -> tuple[int, int]:
    if path.startswith("/vsi"):
        return 0, 0
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _header(path: str) -> dict:
    from rasterio.transform import array_bounds

    from terraseg.io.raster import raster_info

    info = raster_info(path)
    size, mtime = _stat(path)
    left, bottom, right, top = array_bounds(info.height, info.width, info.transform)
    return {
        "path": path,
        "size": size,
        "mtime": mtime,
        "width": info.width,
        "height": info.height,
        "count": len(info.data_bands),
        "dtype": info.dtype,
        "nodata": info.nodata,
        "crs": info.crs.to_wkt() if info.crs else None,
        "transform": json.dumps(list(info.transform)[:6]),
        "minx": left,
        "miny": bottom,
        "maxx": right,
        "maxy": top,
    }


def project_index(paths: list[str], cache: Path | None = None):
    """Header index of ``paths`` (one row each), reusing the cached rows of unchanged files.

    Args:
        paths: raster paths (local or GDAL virtual).
        cache: GeoParquet file to read and (re)write, or None.

    Returns:
        GeoDataFrame with :data:`COLUMNS` and footprints in EPSG:4326 (None for rasters without a CRS).

    Raises:
        InputFileError: an unreadable raster.
    """
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import box

    old = {}
    if cache is not None and cache.is_file():
        try:
            prev = pd.read_parquet(cache, columns=COLUMNS)
            old = {r["path"]: r for r in prev.to_dict("records")}
        except Exception as e:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            log.warning("project index %s unreadable (%s); rebuilding it", cache, e)
    rows, read = [], 0
    for p in paths:
        r = old.get(p)
        if r is None or (r["size"], r["mtime"]) != _stat(p):
            r = _header(p)
            read += 1
        rows.append(r)
    df = pd.DataFrame(rows, columns=COLUMNS)
    geoms: list = []
    from pyproj import CRS as PCRS
    from pyproj import Transformer

    transformers: dict[str, Transformer] = {}
    for r in rows:
        if not r["crs"]:
            geoms.append(None)
            continue
        t = transformers.get(r["crs"])
        if t is None:
            t = transformers[r["crs"]] = Transformer.from_crs(PCRS.from_wkt(r["crs"]), "EPSG:4326", always_xy=True)
        xs, ys = t.transform([r["minx"], r["maxx"], r["maxx"], r["minx"]], [r["miny"], r["miny"], r["maxy"], r["maxy"]])
        geoms.append(box(min(xs), min(ys), max(xs), max(ys)))
    gdf = gpd.GeoDataFrame(df, geometry=geoms, crs="EPSG:4326")
    if cache is not None and (read or not cache.is_file()):
        from terraseg.io.atomic import atomic_path

        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            gdf.to_parquet(tmp)
    log.info("project index: %d rasters, %d headers read, %d reused", len(rows), read, len(rows) - read)
    return gdf


def _index_path(src: ProjectSource, paths: list[str]) -> Path:
    if src.index:
        return Path(src.index)
    digest = hashlib.sha1("\n".join(paths).encode()).hexdigest()[:12]
    from terraseg.settings import cache_dir

    return cache_dir() / f"project-{digest}.parquet"


def project_scenes(src: ProjectSource, root: Path | None, ignore_index: int, num_classes: int | None) -> list[RasterScene]:
    """The labelled scenes of a project source (module docstring).

    Args:
        src: the project source.
        root: the data root for relative paths.
        ignore_index: unknown-pixel value.
        num_classes: K, for checking mask values (None: unchecked).

    Returns:
        One :class:`RasterScene` per labelled raster (plus unlabelled ones as background when asked).

    Raises:
        InputFileError: no raster found, unreadable rasters or labels, no raster with labels.
    """
    from terraseg.io.listing import expand_inputs

    specs = [p if p.startswith("/vsi") or "://" in p else str(resolve_data_path(p, root)) for p in src.images]
    paths = [p for p, _ in expand_inputs(specs)]
    if not paths:
        raise InputFileError(f"{', '.join(src.images)}: no raster found.")
    index = project_index(paths, _index_path(src, paths))
    scenes: list[RasterScene] = []
    skipped = []
    if src.vector is not None:
        from rasterio.crs import CRS
        from rasterio.transform import Affine

        from terraseg.io.vector import SceneLabels, SharedLabels

        vec = src.vector.model_copy(update={"path": str(resolve_data_path(src.vector.path, root))})
        shared = SharedLabels.get(vec.path, vec.layer)
        values = shared.values(vec.attribute, vec.mapping, vec.burn_value)
        for r in index.to_dict("records"):
            crs = CRS.from_wkt(r["crs"]) if r["crs"] else None
            if not shared.meets(crs, (r["minx"], r["miny"], r["maxx"], r["maxy"]), r["path"]) and src.unlabelled == "skip":
                skipped.append(r["path"])
                continue
            scene = RasterScene(r["path"], bands=src.bands, ignore_index=ignore_index, num_classes=num_classes)
            t = Affine(*json.loads(r["transform"]))
            # no copy of the labels per scene: windows look features up in the shared index
            scene._rasterizer = SceneLabels(shared, values, crs, t, int(r["width"]), int(r["height"]), vec.all_touched, r["path"])
            scene.has_labels = True
            scenes.append(scene)
    else:
        assert src.masks is not None
        folder = resolve_data_path(src.masks, root)
        if not folder.is_dir():
            raise InputFileError(f"{folder}: mask folder not found.")
        masks = {p.stem: p for p in folder.iterdir() if is_mask_raster(p)}
        for p in paths:
            m = masks.get(Path(p).stem)
            if m is None:
                if src.unlabelled == "skip":
                    skipped.append(p)
                    continue
            raster = RasterScene(
                p, bands=src.bands, mask_path=m, mask_nodata=src.mask_nodata, ignore_index=ignore_index, num_classes=num_classes
            )
            raster.set_mask_values(src.mask_values)
            if m is None:  # background only: every valid pixel class 0
                from terraseg.io.vector import VectorRasterizer

                raster._rasterizer = VectorRasterizer.from_geometries([], [], raster.info.transform)
                raster.has_labels = True
            scenes.append(raster)
    if skipped:
        log.warning(
            "%d of %d rasters hold no label and were skipped (unlabelled: skip), e.g. %s", len(skipped), len(paths), skipped[0]
        )
    if not scenes:
        raise InputFileError(f"{', '.join(src.images)}: no raster is reached by the labels; check the labels' extent and CRS.")
    if src.aoi:
        for scene in scenes:
            scene.set_aoi(resolve_data_path(src.aoi, root), src.aoi_layer)
    return scenes


__all__ = ["COLUMNS", "project_index", "project_scenes"]
