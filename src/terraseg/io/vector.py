"""Vector labels: read (shapefile, zipped shapefile, GeoJSON, GeoPackage), reproject, rasterize.

Uses geopandas/pyogrio for reading, pyproj (through geopandas) for reprojection and
``rasterio.features.rasterize`` for burning polygons onto a raster grid.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.transform import Affine, array_bounds
from shapely.geometry import box

from terraseg.errors import InputFileError

log = logging.getLogger(__name__)


def read_vector(path: str | os.PathLike[str], layer: str | None = None) -> gpd.GeoDataFrame:
    """Read a vector file into a GeoDataFrame, repairing invalid geometries.

    Zipped shapefiles are read in place (GDAL's /vsizip/).

    Args:
        path: shapefile, zipped shapefile, GeoJSON or GeoPackage.
        layer: layer name (GeoPackage), or None for the first.

    Returns:
        GeoDataFrame of the features with a non-empty geometry, in the file's CRS.

    Raises:
        InputFileError: missing file, unreadable file, or no features with a geometry.
    """
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: label file not found.")
    try:
        gdf = gpd.read_file(p, layer=layer, engine="pyogrio")
    except Exception as e:  # pyogrio raises DataSourceError, DataLayerError, ...; all mean "unreadable"
        raise InputFileError(f"{p}: not a readable vector file ({str(e).splitlines()[0]}).") from None
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if gdf.empty:
        raise InputFileError(f"{p}: the label file holds no features with a geometry.")
    invalid = ~gdf.geometry.is_valid
    if invalid.any():
        gdf = gdf.copy()
        gdf.loc[invalid, "geometry"] = gdf.geometry[invalid].make_valid()
    return gdf


def class_values(
    gdf: gpd.GeoDataFrame,
    path: str,
    attribute: str | None,
    mapping: dict[str, int] | None,
    burn_value: int,
) -> np.ndarray:
    """Class id of every feature: from ``attribute`` through ``mapping``, else ``burn_value``.

    Args:
        gdf: the features.
        path: file name for error messages.
        attribute: column holding the class, or None.
        mapping: attribute value (as text) -> class id, or None when values are ids.
        burn_value: class id of every feature when ``attribute`` is None.

    Returns:
        ``(n,)`` int64 class ids, one per feature.

    Raises:
        InputFileError: the attribute is missing, or a value has no mapping.
    """
    if attribute is None:
        return np.full(len(gdf), burn_value, dtype=np.int64)
    if attribute not in gdf.columns:
        raise InputFileError(f"{path}: attribute '{attribute}' not found (have: {', '.join(map(str, gdf.columns))}).")
    raw = gdf[attribute]
    if mapping is None:
        try:
            return raw.astype(np.int64).to_numpy()
        except (TypeError, ValueError):
            raise InputFileError(
                f"{path}: attribute '{attribute}' holds non-integer values; give a `mapping` (value=class id, ...)."
            ) from None
    keys = raw.map(value_text)
    unknown = sorted(set(keys) - set(mapping))
    if unknown:
        raise InputFileError(
            f"{path}: attribute '{attribute}' holds values with no class: {', '.join(unknown[:10])}; known "
            f"values: {', '.join(mapping)} (map the others with --mapping, e.g. '{unknown[0]}=1')."
        )
    return keys.map(mapping).astype(np.int64).to_numpy()


def value_text(value: object) -> str:
    """An attribute value as the text mappings use: ``10``, ``10.0`` and ``'10'`` are all ``'10'``; a missing value ``''``.

    Args:
        value: one attribute value (number, text, None or NaN).
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def labels_in_crs(
    path: str | os.PathLike[str], crs: CRS | None, layer: str | None = None, raster_path: str = ""
) -> gpd.GeoDataFrame:
    """Read a vector file and reproject it to ``crs`` (a file without CRS is assumed to be in ``crs``).

    Args:
        path: vector file.
        crs: the raster's CRS.
        layer: layer name, or None.
        raster_path: the raster's file name for error messages.

    Returns:
        GeoDataFrame in ``crs`` (coordinates in its units, e.g. metres).

    Raises:
        InputFileError: unreadable file, no features, or a raster without CRS.
    """
    gdf = read_vector(path, layer)
    if crs is None:
        raise InputFileError(f"{raster_path}: raster has no CRS, so vector labels {path} cannot be placed on it.")
    if gdf.crs is None:
        log.warning("%s has no CRS; assuming the raster's CRS %s", path, crs)
        return gdf.set_crs(crs)
    if not CRS.from_user_input(gdf.crs) == crs:
        try:
            gdf = gdf.to_crs(crs)
        except Exception as e:  # pyproj errors: no transformation between the two CRSs
            raise InputFileError(f"{path}: labels cannot be reprojected to the raster CRS ({str(e).splitlines()[0]}).") from None
        gdf = gdf[~gdf.geometry.is_empty]  # features outside the target CRS's domain
    return gdf


class SharedLabels:
    """One vector file read once per process, indexed, and looked up per raster by its footprint.

    A project of many scenes usually has one labels file over all of them (a building-footprint
    GeoPackage with millions of polygons). It is read once (geometries repaired), a spatial index
    (shapely STRtree, through geopandas' ``sindex``) is built in the file's CRS, and each raster asks
    for the features inside its footprint (the raster bounds transformed into the file's CRS,
    ``rasterio.warp.transform_bounds``); only those are reprojected to the raster's CRS. Instances are
    cached per process by path, layer and modification time (:meth:`get`).

    Args:
        path: vector file.
        layer: layer name, or None for the first.

    Raises:
        InputFileError: unreadable file, or no features with a geometry.
    """

    _cache: dict[tuple, SharedLabels] = {}

    def __init__(self, path: str | os.PathLike[str], layer: str | None = None) -> None:
        self.path = str(path)
        self.gdf = read_vector(path, layer)
        self.tree = self.gdf.sindex
        self.geoms = self.gdf.geometry.to_numpy()  # once: GeoSeries.to_numpy() copies the whole column
        self._values: dict[tuple, np.ndarray] = {}

    @classmethod
    def get(cls, path: str | os.PathLike[str], layer: str | None = None) -> SharedLabels:
        """The process's shared copy of ``path`` (read on first use).

        Args:
            path: vector file.
            layer: layer name, or None.
        """
        p = Path(path)
        try:
            st = p.stat()
            key = (str(p.resolve()), layer, st.st_mtime_ns, st.st_size)
        except OSError:
            key = (str(p), layer, 0, 0)
        if key not in cls._cache:
            cls._cache[key] = cls(path, layer)
            # the index lives as long as the process and holds a Python object per feature: moved out of the
            # collector's generations, so that collections (triggered by allocations in every training window)
            # do not walk a million geometries each time, and forked loader workers do not write to their pages
            # (Python docs, gc.freeze: "call gc.freeze() right before fork()")
            gc.freeze()
        return cls._cache[key]

    def values(self, attribute: str | None, mapping: dict[str, int] | None, burn_value: int) -> np.ndarray:
        """Class id of every feature (:func:`class_values`), computed once per labelling rule.

        Args:
            attribute: vector field holding the class, or None (every feature ``burn_value``).
            mapping: attribute value -> class id, or None (values are ids).
            burn_value: class id without ``attribute``.
        """
        key = (attribute, tuple(sorted((mapping or {}).items())), burn_value)
        if key not in self._values:
            self._values[key] = class_values(self.gdf, self.path, attribute, mapping, burn_value)
        return self._values[key]

    @property
    def crs(self) -> CRS | None:
        """The file's CRS (None when it has none)."""
        return CRS.from_user_input(self.gdf.crs) if self.gdf.crs is not None else None

    def nbytes(self) -> int:
        """Approximate bytes held: the geometries (GEOS coordinates and objects), the index and the class ids."""
        g = self.gdf.geometry.to_numpy()
        coords = int(shapely.get_num_coordinates(g).sum()) if len(g) else 0
        return coords * 16 + len(g) * (200 + 64) + sum(v.nbytes for v in self._values.values())

    def _bounds_in_file_crs(
        self, crs: CRS | None, bounds: tuple[float, float, float, float], raster_path: str
    ) -> tuple[CRS, tuple]:
        """``(the file's CRS, bounds transformed into it)``; a file without CRS is taken to be in ``crs`` (warned)."""
        from rasterio.warp import transform_bounds

        if crs is None:
            raise InputFileError(f"{raster_path}: raster has no CRS, so vector labels {self.path} cannot be placed on it.")
        src_crs = self.crs
        if src_crs is None:
            log.warning("%s has no CRS; assuming the raster's CRS %s", self.path, crs)
            src_crs = crs
        try:
            return src_crs, (bounds if src_crs == crs else transform_bounds(crs, src_crs, *bounds, densify_pts=21))
        except Exception as e:  # noqa: BLE001 - pyproj/GDAL: no transformation between the two CRSs
            raise InputFileError(
                f"{self.path}: labels cannot be reprojected to the raster CRS ({str(e).splitlines()[0]})."
            ) from None

    def meets(self, crs: CRS | None, bounds: tuple[float, float, float, float], raster_path: str = "") -> bool:
        """Whether any feature's box meets ``bounds`` (in ``crs``): an index query, no geometry is reprojected.

        Args:
            crs: the raster's CRS.
            bounds: ``(left, bottom, right, top)`` in ``crs``.
            raster_path: for messages.

        Raises:
            InputFileError: a raster without CRS, or no transformation between the two CRSs.
        """
        return len(self.tree.query(box(*self._bounds_in_file_crs(crs, bounds, raster_path)[1]))) > 0

    def within(
        self, crs: CRS | None, bounds: tuple[float, float, float, float], raster_path: str = ""
    ) -> tuple[np.ndarray, np.ndarray]:
        """Indexes and geometries (in ``crs``) of the features meeting ``bounds`` (in ``crs``).

        Args:
            crs: the raster's CRS.
            bounds: ``(left, bottom, right, top)`` in ``crs``.
            raster_path: for messages.

        Returns:
            ``(feature indexes, geometries in crs)``.

        Raises:
            InputFileError: a raster without CRS, or labels that cannot be reprojected to it.
        """
        src_crs, b = self._bounds_in_file_crs(crs, bounds, raster_path)
        idx = np.sort(self.tree.query(box(*b)))
        sub = self.gdf.geometry.iloc[idx]
        if len(idx) and src_crs != crs:
            try:
                sub = sub.set_crs(src_crs, allow_override=True).to_crs(crs)
            except Exception as e:  # noqa: BLE001 - pyproj errors
                raise InputFileError(
                    f"{self.path}: labels cannot be reprojected to the raster CRS ({str(e).splitlines()[0]})."
                ) from None
        geoms = sub.to_numpy()
        keep = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))  # vectorised: projects hold millions of features
        return idx[keep], geoms[keep]


class VectorRasterizer:
    """Burns polygon labels onto windows of one raster grid.

    The file is read once per process (:class:`SharedLabels`); the features inside the raster's
    footprint are reprojected to the raster CRS once; each call rasterizes only the features whose
    bounds meet the window (spatial index), so a scene of any size is labelled window by window.

    Args:
        labels: the vector file and how its features become classes (path, layer, attribute, mapping, burn value,
            all_touched: :class:`terraseg.config.VectorLabels`).
        grid: the raster's CRS, transform, width and height (:class:`terraseg.io.raster.RasterInfo` or a ``Grid``).
        raster_path: raster name for error messages.

    Raises:
        InputFileError: unreadable labels, unknown class values, or no overlap with the raster.
    """

    def __init__(self, labels: Any, grid: Any, raster_path: str = "") -> None:
        shared = SharedLabels.get(labels.path, labels.layer)  # read and indexed once per process, whatever the scenes
        values = shared.values(labels.attribute, labels.mapping, labels.burn_value)
        raster_box = box(*array_bounds(grid.height, grid.width, grid.transform))
        idx, geoms = shared.within(grid.crs, raster_box.bounds, raster_path)
        hits = shapely.intersects(geoms, raster_box) if len(geoms) else np.zeros(0, bool)
        if not hits.any():
            raise InputFileError(f"{labels.path}: labels have no overlap with raster {raster_path or '(grid)'}.")
        self._setup(geoms[hits], values[idx[hits]], grid.transform, labels.all_touched)

    def _setup(self, geoms: np.ndarray, values: np.ndarray, transform: Affine, all_touched: bool) -> None:
        self.geoms = geoms
        self.values = values
        self.tree = gpd.GeoSeries(self.geoms).sindex
        self.transform = transform
        self.all_touched = all_touched

    @classmethod
    def from_geometries(cls, geoms, values, transform: Affine, all_touched: bool = False) -> VectorRasterizer:
        """A rasterizer for geometries already in the raster CRS (``values``: class id per geometry)."""
        self = cls.__new__(cls)
        self._setup(np.asarray(geoms, dtype=object), np.asarray(values, dtype=np.int64), transform, all_touched)
        return self

    def shapes(self, bounds: tuple[float, float, float, float] | None = None):
        """``(geometry, class id)`` pairs meeting ``bounds`` (raster CRS; default: every feature)."""
        idx = np.arange(len(self.geoms)) if bounds is None else np.sort(self.tree.query(box(*bounds)))
        return burn_shapes(self.geoms[idx], self.values[idx])

    def rasterize(self, row_off: int, col_off: int, height: int, width: int, fill: int = 0) -> np.ndarray:
        """Rasterize the window ``(row_off, col_off, height, width)`` into an ``(H, W)`` int64 mask."""
        t = self.transform @ Affine.translation(col_off, row_off)
        win_box = box(*array_bounds(height, width, t))
        idx = np.sort(self.tree.query(win_box))
        out = np.full((height, width), fill, dtype=np.int32)
        shapes = burn_shapes(self.geoms[idx], self.values[idx]) if len(idx) else []
        if shapes:
            rasterize(shapes, out=out, transform=t, all_touched=self.all_touched)
        return out.astype(np.int64)


def burn_shapes(geoms: Sequence[Any] | np.ndarray, values: Sequence[int] | np.ndarray) -> list[tuple[Any, int]]:
    """``(geometry, class id)`` pairs for ``rasterio.features.rasterize``, polygons converted vectorised.

    rasterio reads each shapely geometry through its ``__geo_interface__``, a Python loop over
    coordinates (about 30 us a polygon: half a minute per million). Polygons and multipolygons are
    turned into GeoJSON-like mappings here with shapely's vectorised accessors (``get_parts``,
    ``get_rings``, ``get_coordinates``); the burnt pixels are identical. Other geometry types pass as they are.

    Args:
        geoms: ``(N,)`` shapely geometries.
        values: ``(N,)`` class ids.

    Returns:
        ``[(geometry mapping or shapely geometry, int)]``; empty and missing geometries are dropped.
    """
    shapes = np.asarray(geoms, dtype=object)
    if not len(shapes):
        return []
    keep = ~(shapely.is_missing(shapes) | shapely.is_empty(shapes))
    geoms, values = shapes[keep], np.asarray(values)[keep]
    types = shapely.get_type_id(geoms)
    poly = (types == 3) | (types == 6)  # Polygon, MultiPolygon
    if not poly.any():
        return [(g, int(v)) for g, v in zip(geoms, values)]
    parts, which = shapely.get_parts(geoms[poly], return_index=True)
    nonempty = ~shapely.is_empty(parts)
    parts, which = parts[nonempty], which[nonempty]
    rings = shapely.get_rings(parts)  # each polygon's exterior, then its holes
    per_part = shapely.get_num_interior_rings(parts) + 1
    coords, ring_of = shapely.get_coordinates(rings, return_index=True)
    xy = coords.tolist()
    edges = np.searchsorted(ring_of, np.arange(len(rings) + 1)).tolist()
    ring_lists = [xy[edges[i] : edges[i + 1]] for i in range(len(rings))]
    mapped: list[list[dict]] = [[] for _ in range(int(poly.sum()))]  # per polygonal input, its parts
    k = 0
    for n, w in zip(per_part.tolist(), which.tolist()):
        mapped[w].append({"type": "Polygon", "coordinates": ring_lists[k : k + n]})
        k += n
    out: list[tuple[Any, int]] = []  # in the input order: a later feature burns over an earlier one, as in rasterio
    j = 0
    for g, v, is_poly in zip(geoms, values.tolist(), poly.tolist()):  # type: ignore[union-attr]
        if is_poly:
            out += [(m, int(v)) for m in mapped[j]]
            j += 1
        else:
            out.append((g, int(v)))
    return out


class SceneLabels:
    """The labels of one raster of a project, looked up in the project's shared index window by window.

    Nothing is copied per scene: in the labels' CRS a window's features come straight from the shared
    spatial index (:class:`SharedLabels`), so a project of thousands of scenes holds one index, not one
    per scene. A raster in another CRS gets its features reprojected once, on first use, into a
    :class:`VectorRasterizer` kept in the process's byte-limited cache (:mod:`terraseg.io.cache`), so
    memory stays within ``data.cache_mb`` whatever the number of CRSs and scenes.

    Args:
        shared: the project's labels.
        values: class id per feature of ``shared``. crs, transform, width,
        height: the raster's grid.
        all_touched: burn every pixel a polygon touches.
        raster_path: for messages.
    """

    def __init__(
        self,
        shared: SharedLabels,
        values: np.ndarray,
        crs: CRS | None,
        transform: Affine,
        width: int,
        height: int,
        all_touched: bool = False,
        raster_path: str = "",
    ) -> None:
        self.shared, self.all_values, self.crs, self.transform = shared, values, crs, transform
        self.width, self.height, self.all_touched, self.raster_path = width, height, all_touched, raster_path
        self.same_crs = shared.crs is None or (crs is not None and shared.crs == crs)

    def _local(self) -> VectorRasterizer:
        """The reprojected features of this raster (another CRS than the labels'), cached by bytes."""
        from terraseg.io.cache import CACHE

        key = ("scene-labels", id(self))
        r = CACHE.get(key)
        if r is None:
            idx, geoms = self.shared.within(self.crs, array_bounds(self.height, self.width, self.transform), self.raster_path)
            r = VectorRasterizer.from_geometries(geoms, self.all_values[idx], self.transform, self.all_touched)
            coords = int(shapely.get_num_coordinates(r.geoms).sum()) if len(r.geoms) else 0
            CACHE.put(key, r, coords * 16 + len(r.geoms) * 300 + 1024)
        return r

    def shapes(self, bounds: tuple[float, float, float, float] | None = None):
        """``(geometry, class id)`` pairs in the raster's CRS meeting ``bounds`` (default: the whole raster)."""
        if not self.same_crs:
            return self._local().shapes(bounds)
        b = bounds or array_bounds(self.height, self.width, self.transform)
        idx = np.sort(self.shared.tree.query(box(*b)))
        return burn_shapes(self.shared.geoms[idx], self.all_values[idx])

    def rasterize(self, row_off: int, col_off: int, height: int, width: int, fill: int = 0) -> np.ndarray:
        """Rasterize the window ``(row_off, col_off, height, width)`` into an ``(H, W)`` int64 mask."""
        t = self.transform @ Affine.translation(col_off, row_off)
        out = np.full((height, width), fill, dtype=np.int32)
        shapes = list(self.shapes(array_bounds(height, width, t)))
        if shapes:
            rasterize(shapes, out=out, transform=t, all_touched=self.all_touched)
        return out.astype(np.int64)


VECTOR_DRIVERS = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG", ".shp": "ESRI Shapefile"}


def vector_driver(path: str | os.PathLike[str]) -> str:
    """The OGR driver for a vector output, from its suffix.

    Args:
        path: the output file.

    Returns:
        The driver name ('GeoJSON', 'GPKG', 'ESRI Shapefile').

    Raises:
        InputFileError: a suffix that is not .geojson, .json, .gpkg or .shp.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in VECTOR_DRIVERS:
        raise InputFileError(f"{path}: unknown vector format; use one of {', '.join(VECTOR_DRIVERS)}.")
    return VECTOR_DRIVERS[suffix]


def write_vector(gdf: gpd.GeoDataFrame, path: str | os.PathLike[str], layer: str) -> Path:
    """Write ``gdf`` atomically (temporary file, then rename) in the format of ``path``'s suffix.

    Args:
        gdf: the features.
        path: .geojson, .json, .gpkg or .shp.
        layer: layer name (GeoPackage).

    Returns:
        ``path`` as a Path.

    Raises:
        InputFileError: an unknown suffix.
        OutputError: the folder cannot be written.
    """
    import pyogrio

    from terraseg.errors import OutputError
    from terraseg.io.atomic import atomic_path, write_failure

    driver = vector_driver(path)
    with atomic_path(path) as tmp:
        tmp.unlink(missing_ok=True)  # the GPKG driver refuses to overwrite the empty temp file
        gdf.to_file(tmp, driver=driver, engine="pyogrio", layer=layer)
        # GDAL's GeoJSON writer reports a failed flush (a full disk) nowhere: read the file back before it is renamed
        try:
            written = pyogrio.read_info(tmp, layer=layer if driver == "GPKG" else None)["features"]
        except Exception as e:  # noqa: BLE001 - any failure to read it back means it is not whole
            written, why = -1, write_failure(e, tmp.parent) or str(e).splitlines()[0]
        else:
            why = ""  # read back: the count below decides
        if written != len(gdf):
            raise OutputError(
                f"{path}: the written file came out incomplete ({why or f'{written} of {len(gdf)} features'}); "
                "nothing was kept: free some space or write elsewhere."
            )
    return Path(path)
