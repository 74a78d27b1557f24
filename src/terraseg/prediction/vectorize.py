"""Vectorize a class raster: one polygon per connected region, with class, area and mean confidence.

The raster is read in strips of ``block`` rows. In each strip, the regions of every class are
labelled (``scipy.ndimage.label`` with 4- or 8-connectivity) and traced into polygons by GDAL's
polygonizer (``rasterio.features.shapes``) on the region-id raster, so each polygon knows its pixel
count and, with a probability raster, the sum of its class probability. Regions touching a strip
seam are merged with their neighbours across the seam afterwards (geometric union per class), so a
region crossing strips comes out as one feature; memory is bounded by one strip plus the seam
regions, not by the scene.

Areas are in square CRS units for projected CRSs (m^2 for metric ones) and geodesic m^2 (pyproj
``Geod``) for geographic CRSs.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.features import shapes
from rasterio.transform import Affine
from rasterio.windows import Window
from scipy import ndimage
from shapely import STRtree, union_all
from shapely.geometry import shape

from terraseg import progress
from terraseg.config.prep import VectorizeConfig
from terraseg.data.windows import row_strips
from terraseg.errors import InputFileError
from terraseg.io.raster import open_raster, read_window
from terraseg.io.vector import vector_driver, write_vector

log = logging.getLogger(__name__)


@dataclass
class _Region:
    geom: object
    cls: int
    pixels: int
    prob_sum: float
    seam: bool


def _strip_regions(
    ids: np.ndarray, probs: np.ndarray | None, classes: list[int], t: Affine, conn: int, top_seam: bool, bottom_seam: bool
) -> list[_Region]:
    structure = ndimage.generate_binary_structure(2, 1 if conn == 4 else 2)
    out: list[_Region] = []
    for k, c in enumerate(classes):
        comp, n = ndimage.label(ids == c, structure=structure)
        if n == 0:
            continue
        pixels = np.bincount(comp.ravel(), minlength=n + 1)
        psum = np.bincount(comp.ravel(), weights=probs[k].ravel(), minlength=n + 1) if probs is not None else np.zeros(n + 1)
        seam = np.zeros(n + 1, dtype=bool)
        if top_seam:
            seam[np.unique(comp[0])] = True
        if bottom_seam:
            seam[np.unique(comp[-1])] = True
        for geom, rid in shapes(comp.astype(np.int32), mask=comp > 0, connectivity=conn, transform=t):
            rid = int(rid)
            out.append(_Region(shape(geom), c, int(pixels[rid]), float(psum[rid]), bool(seam[rid])))
    return out


def _merge_seams(regions: list[_Region]) -> list[_Region]:
    """Union seam regions of one class that touch; sum their pixel counts and probabilities."""
    keep = [r for r in regions if not r.seam]
    by_class: dict[int, list[_Region]] = {}
    for r in regions:
        if r.seam:
            by_class.setdefault(r.cls, []).append(r)
    for c, parts in by_class.items():
        merged = union_all([p.geom for p in parts])
        pieces = list(getattr(merged, "geoms", [merged]))
        tree = STRtree(pieces)
        acc = [[0, 0.0] for _ in pieces]
        for p in parts:
            j = tree.query(p.geom.representative_point(), predicate="intersects")  # type: ignore[attr-defined]
            i = int(j[0]) if len(j) else 0
            acc[i][0] += p.pixels
            acc[i][1] += p.prob_sum
        keep += [_Region(g, c, n, s, False) for g, (n, s) in zip(pieces, acc)]  # type: ignore[arg-type]
    return keep


def _regions_to_frame(
    regions: list[_Region], crs, transform: Affine, names: list[str], with_confidence: bool, min_area: float, simplify: float
):
    """Merge seam regions and build the GeoDataFrame (class_id, class_name, pixels, confidence, area, geometry)."""
    import geopandas as gpd

    regions = _merge_seams(regions)
    gdf = gpd.GeoDataFrame(
        {
            "class_id": [r.cls for r in regions],
            "class_name": [names[r.cls] if r.cls < len(names) else str(r.cls) for r in regions],
            "pixels": [r.pixels for r in regions],
            "confidence": [r.prob_sum / r.pixels if with_confidence else None for r in regions],
        },
        geometry=[r.geom for r in regions],
        crs=crs,
    )
    if crs is not None and crs.is_geographic:
        from pyproj import Geod

        geod = Geod(ellps="WGS84")
        gdf["area"] = [abs(geod.geometry_area_perimeter(g)[0]) for g in gdf.geometry]
    else:
        gdf["area"] = gdf["pixels"] * abs(transform.a * transform.e - transform.b * transform.d)
    if min_area > 0:
        gdf = gdf[gdf["area"] >= min_area]
    if simplify > 0:
        gdf["geometry"] = gdf.geometry.simplify(simplify, preserve_topology=True)
    return gdf.sort_values(["class_id", "area"], ascending=[True, False]).reset_index(drop=True)


def vectorize_array(
    class_ids: np.ndarray,
    transform: Affine,
    crs=None,
    probabilities: np.ndarray | None = None,
    class_names: list[str] | None = None,
    nodata: int | None = None,
    connectivity: int = 4,
    simplify: float = 0.0,
    min_area: float = 0.0,
    block: int = 2048,
):
    """Polygons of the regions of an in-memory class raster (the API's GeoJSON), no file round trip.

    Args:
        class_ids: ``(H, W)`` integer class ids; 0 (background), negatives and ``nodata`` are not vectorized.
        transform: affine of the top-left pixel.
        crs: the CRS (None for plain images: pixel units).
        probabilities: optional ``(K, H, W)`` float32 for each region's mean confidence.
        class_names: names for the ``class_name`` column.
        connectivity: 4 or 8.
        simplify: tolerance in CRS units.
        min_area: smallest kept area (square CRS units / m^2).
        block: rows per strip (regions across strips are merged).

    Returns:
        A GeoDataFrame with ``class_id``, ``class_name``, ``pixels``, ``confidence``, ``area`` and polygon geometry.
    """
    H = class_ids.shape[0]
    classes = sorted(int(v) for v in np.unique(class_ids) if v > 0 and v != nodata)
    regions: list[_Region] = []
    for r0 in range(0, H, block):
        h = min(block, H - r0)
        probs = probabilities[classes, r0 : r0 + h] if probabilities is not None and classes else None
        regions += _strip_regions(
            class_ids[r0 : r0 + h], probs, classes, transform @ Affine.translation(0, r0), connectivity, r0 > 0, r0 + h < H
        )
    return _regions_to_frame(regions, crs, transform, class_names or [], probabilities is not None, min_area, simplify)


def _stored_class_names(ds, pds) -> list[str]:
    """Class names a terraseg class raster carries (band-1 tag ``class_names``), else the probability bands' descriptions."""
    try:
        names = json.loads(ds.tags(1).get("class_names", "[]"))
        if isinstance(names, list) and all(isinstance(n, str) for n in names) and names:
            return names
    except (ValueError, TypeError):
        pass
    if pds is not None and all(pds.descriptions):
        return list(pds.descriptions)
    return []


def vectorize(cfg: VectorizeConfig) -> Path:
    """Write polygons of the regions of ``cfg.raster`` to ``cfg.out`` (GeoJSON/GeoPackage) in the raster's CRS.

    Columns: ``class_id``, ``class_name``, ``pixels``, ``area`` (see module doc), ``confidence``
    (mean probability of the region's class, when ``cfg.probabilities`` is given), geometry.

    Args:
        cfg: :class:`terraseg.config.prep.VectorizeConfig` (class raster, output, probabilities, classes, simplification in CRS units, minimum area).

    Returns:
        ``cfg.out`` as a Path.

    Raises:
        InputFileError: unreadable rasters, probabilities on another grid or with too few bands, an unknown output
            format.
        OutputError: the output cannot be written.
    """
    out = Path(cfg.out)
    vector_driver(out)  # an unknown format fails before any work
    regions: list[_Region] = []
    with (
        open_raster(cfg.raster) as ds,
        open_raster(cfg.probabilities) if cfg.probabilities else contextlib.nullcontext() as pds,
        contextlib.ExitStack() as stack,
    ):
        crs, tr, H, W, nodata = ds.crs, ds.transform, ds.height, ds.width, ds.nodata
        names = _stored_class_names(ds, pds)
        if pds is not None and ((pds.width, pds.height) != (W, H) or pds.crs != crs):
            raise InputFileError(f"{cfg.probabilities}: probabilities are not on the grid of {cfg.raster}.")
        strips = list(row_strips(H, W, cfg.block))
        classes = cfg.classes
        if classes is None:
            seen: set[int] = set()
            for s in strips:
                seen.update(np.unique(read_window(ds, Window(0, s.row, W, s.height), [1], path=str(cfg.raster))[0]).tolist())
            classes = sorted(int(v) for v in seen if v != 0 and v != nodata)
        if pds is not None and classes and max(classes) >= pds.count:
            raise InputFileError(f"{cfg.probabilities}: {pds.count} probability bands, but class {max(classes)} is vectorized.")
        advance = stack.enter_context(progress.task(f"vectorize {Path(cfg.raster).name}", H, "rows"))
        for s in strips:
            advance(s.height)
            w = Window(0, s.row, W, s.height)
            ids = read_window(ds, w, [1], path=str(cfg.raster))[0]
            probs = (
                read_window(pds, w, [c + 1 for c in classes], path=str(cfg.probabilities))
                if pds is not None and classes
                else None
            )
            regions += _strip_regions(
                ids, probs, classes, tr @ Affine.translation(0, s.row), cfg.connectivity, s.row > 0, s.row + s.height < H
            )
    gdf = _regions_to_frame(regions, crs, tr, cfg.class_names or names, bool(cfg.probabilities), cfg.min_area, cfg.simplify)
    write_vector(gdf, out, "regions")
    log.info("vectorized %d regions of %s into %s", len(gdf), cfg.raster, out)
    return out
