"""A raster scene: a GeoTIFF (any GDAL raster) of any band count and dtype, labelled by a vector file (rasterized
window by window after reprojection) or a mask raster on the same grid, optionally restricted to a labelled extent
(AOI); small scenes are decoded once into the byte-limited cache (or the run's spill store), large ones streamed.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine
from rasterio.windows import Window

from terraseg.data.scenes import Region, Scene, WindowRead, crop_window, widen_mask
from terraseg.errors import InputFileError
from terraseg.io.cache import CACHE, SPILL, compact_mask
from terraseg.io.raster import Grid, info_of, open_raster, read_validity, read_window, shared_dataset, shifted_georef, valid_mask

if TYPE_CHECKING:
    from terraseg.io.vector import SceneLabels, VectorRasterizer

CACHE_LIMIT_BYTES = 1 << 29  # regions whose pixels exceed 512 MiB are always streamed (the cache's budget decides below)


def _spill(key, c: WindowRead) -> bool:
    """Write a decoded region to the run's spill store (:class:`terraseg.io.cache.SpillStore`); whether it was written."""
    arrays = {"image": c.image, "valid": c.valid.view(np.uint8)} | ({"mask": c.mask} if c.mask is not None else {})
    return SPILL.put(key, arrays)


class _HashedKey(tuple):
    """A tuple that computes its hash once (cache keys are looked up for every training window)."""

    def __hash__(self) -> int:
        h = self.__dict__.get("_h")
        if h is None:
            h = self.__dict__["_h"] = tuple.__hash__(self)
        return h


class RasterScene(Scene):
    """A georeferenced raster with labels from a vector file or a mask raster.

    Args:
        path: raster file.
        bands: 1-based band indexes to read (default all).
        vector: vector label spec (:class:`terraseg.config.VectorLabels`), or None.
        mask_path: mask raster on the same grid, or None.
        mask_nodata: mask value meaning unknown (default: the mask raster's nodata tag; ``"none"``: no value,
            the tag not honoured).
        ignore_index: mask value for unknown pixels.
        region: restrict the scene to this rectangle (train/val splits of one scene).
        num_classes: when given, mask values outside ``0..num_classes-1`` raise an error.
        cache: keep the decoded region in the process's byte-limited LRU cache (:mod:`terraseg.io.cache`)
            when it is below :data:`CACHE_LIMIT_BYTES` and a quarter of the cache's budget.

    Raises:
        InputFileError: unreadable raster or labels, mask of another size/grid, labels that do not
            overlap the raster, out-of-range band indexes.
    """

    def __init__(
        self,
        path: str | Path,
        bands: list[int] | None = None,
        vector=None,
        mask_path: str | Path | None = None,
        mask_nodata: int | str | None = None,
        ignore_index: int = 255,
        region: Region | None = None,
        num_classes: int | None = None,
        cache: bool = True,
    ) -> None:
        self.path = str(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with open_raster(path) as ds:
                info = info_of(ds, self.path)
        if bands and (min(bands) < 1 or max(bands) > info.count):
            raise InputFileError(f"{path}: band indexes {bands} out of range (the raster has {info.count} bands).")
        if info.count == 0:
            raise InputFileError(f"{path}: the raster has no bands; give a raster with at least one band of data.")
        # an alpha band marks validity: never a data band unless the user selects it by index
        self.bands = list(bands) if bands else info.data_bands
        self.info = info
        self.region = region or Region(0, 0, info.height, info.width)
        self.name = Path(path).stem
        self.height, self.width = self.region.height, self.region.width
        self.count = len(self.bands)
        self.dtype = info.dtype
        self.crs = info.crs
        self.transform = info.transform @ Affine.translation(self.region.col_off, self.region.row_off)
        self.nodata = info.nodata
        self.ignore_index = ignore_index
        self.num_classes = num_classes
        self.mask_path = str(mask_path) if mask_path else None
        honour_tag = mask_nodata != "none"
        self.mask_nodata: int | str | None = None if mask_nodata == "none" else mask_nodata
        self.mask_nodata_tag: int | None = None  # the mask's own nodata tag, when it decided mask_nodata
        self._rasterizer: VectorRasterizer | SceneLabels | None = None  # SceneLabels: a project's shared index
        if vector is not None:
            from terraseg.io.vector import VectorRasterizer  # geopandas/shapely/pyproj only for vector labels

            self._rasterizer = VectorRasterizer(vector, info, self.path)
        if self.mask_path:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with open_raster(self.mask_path) as mds:
                    if (mds.width, mds.height) != (info.width, info.height):
                        raise InputFileError(
                            f"{self.mask_path}: mask is {mds.width}x{mds.height} pixels but image {self.path} is "
                            f"{info.width}x{info.height}; they must share one grid."
                        )
                    if info.crs and mds.crs and (mds.crs != info.crs or not mds.transform.almost_equals(info.transform)):
                        raise InputFileError(f"{self.mask_path}: mask is not on the grid (CRS/transform) of image {self.path}.")
                    if honour_tag and self.mask_nodata is None and mds.nodata is not None:
                        self.mask_nodata = self.mask_nodata_tag = int(mds.nodata)
        self.has_labels = self._rasterizer is not None or self.mask_path is not None
        self._aoi: SceneLabels | None = None  # the labelled extent (set_aoi): labels outside it are unknown
        self._values: tuple[np.ndarray, np.ndarray] | None = None  # mask value -> class id (set_mask_values)
        nbytes = self.height * self.width * self.count * np.dtype(self.dtype).itemsize
        self._cache_ok = cache and nbytes <= CACHE_LIMIT_BYTES
        self._past_budget = False  # the decoded region is over a quarter of this process's cache budget
        self._fills = {"image": 0, "valid": 0, "mask": self.ignore_index}  # outside the region, in a spill read
        self._cached: WindowRead | None = None
        self._ds = None
        self.exclude: tuple[Region, ...] = ()  # labels never used here (held-out blocks and their buffer)
        self.score_region: Region | None = None  # labels used only here (a validation block read with context)

    def window_grid(self, row: int, col: int, height: int, width: int) -> Grid:
        """The grid of a window of this scene (region pixels): its transform, or its GCPs/RPCs moved to the window."""
        gcps, rpcs = shifted_georef(self.info.gcps, self.info.rpcs, self.region.row_off + row, self.region.col_off + col)
        return Grid(width, height, self.crs, self.window_transform(row, col), gcps, rpcs)

    @property
    def grid(self) -> Grid:
        """The scene's grid: size, CRS and transform of its top-left pixel, or its GCPs/RPCs (rasters placed without a geotransform)."""
        return self.window_grid(0, 0, self.height, self.width)

    def band_descriptions(self) -> list[str] | None:
        """The raster's descriptions of the bands read, when every one is set; else None."""
        with open_raster(self.path) as ds:
            desc = [ds.descriptions[b - 1] for b in self.bands]
        return list(desc) if all(desc) else None

    def __getstate__(self):  # datasets, caches and hashes (salted per process) are per process
        state = self.__dict__.copy()
        state["_ds"] = None
        state.pop("_key", None)
        return state

    def _dataset(self, path: str | None = None):
        """The open dataset of the image (or of ``path``, the mask), from :func:`terraseg.io.raster.shared_dataset`."""
        return shared_dataset(path or self.path)

    def _labels(self, row: int, col: int, h: int, w: int, valid: np.ndarray) -> np.ndarray:
        """Class mask of a window (region pixels), ``ignore_index`` where ``valid`` is False."""
        r0, c0 = row + self.region.row_off, col + self.region.col_off
        if self._rasterizer is not None:
            mask = self._rasterizer.rasterize(r0, c0, h, w)
        else:
            assert self.mask_path is not None
            mds = self._dataset(self.mask_path)
            mask = self._class_ids(read_window(mds, Window(c0, r0, w, h), [1], fill=0, path=self.mask_path)[0].astype(np.int64))
            self._check_classes(mask, self.num_classes, self.mask_path)
        mask[~valid] = self.ignore_index
        if self._aoi is not None:
            mask[self._aoi.rasterize(r0, c0, h, w) == 0] = self.ignore_index
        self._exclude(mask, row, col)
        return mask

    def set_mask_values(self, mapping: dict[str, int] | None) -> None:
        """Read the mask's values through ``mapping`` (value as text -> class id), e.g. land-cover codes 1, 2, 3, 4, 8.

        Args:
            mapping: :attr:`terraseg.config.SceneSource.mask_values`, or None (the values are the class ids).
        """
        if mapping:
            keys = np.array(sorted(int(float(k)) for k in mapping), dtype=np.int64)
            self._values = keys, np.array([mapping[str(k)] for k in keys], dtype=np.int64)

    def _class_ids(self, raw: np.ndarray) -> np.ndarray:
        """Raw mask values -> class ids: nodata is ``ignore_index``, other values go through :meth:`set_mask_values`.

        Raises:
            InputFileError: a value the mapping does not list (a class training never saw, never silently unknown).
        """
        nodata = raw == self.mask_nodata if self.mask_nodata is not None else None
        if self._values is not None:
            keys, ids = self._values
            pos = np.clip(np.searchsorted(keys, raw), 0, len(keys) - 1)
            known = keys[pos] == raw
            if nodata is not None:
                known |= nodata
            if not known.all():
                odd = ", ".join(str(v) for v in np.unique(raw[~known])[:8])
                raise InputFileError(
                    f"{self.mask_path}: mask values {odd} are not among the classes (values "
                    f"{', '.join(map(str, keys))}); add them to the source's mask_values or set them to nodata."
                )
            raw = ids[pos]
        if nodata is not None:
            raw[nodata] = self.ignore_index
        return raw

    def set_aoi(self, path: str | Path, layer: str | None = None) -> None:
        """Restrict the labels to a labelled extent (Raster Vision's AOI): every pixel outside its polygons is unknown.

        Users' polygons often cover only the part of a scene someone digitised; without an extent, every other pixel
        would be trained and scored as background. Pixels outside the extent become ``ignore_index`` for training,
        hold-out blocks and scores alike. Nothing is copied per scene: windows look the polygons up in the file's
        shared spatial index (:class:`terraseg.io.vector.SceneLabels`).

        Args:
            path: polygon file (GeoPackage, GeoJSON, shapefile) in any CRS (reprojected to the raster's).
            layer: its layer (multi-layer files); default the first.

        Raises:
            InputFileError: an unreadable file, or a raster without CRS the polygons cannot be placed on.
        """
        from terraseg.io.vector import SceneLabels, SharedLabels

        shared = SharedLabels.get(path, layer)
        self._aoi = SceneLabels(
            shared,
            np.ones(len(shared.geoms), dtype=np.int64),
            self.crs,
            self.info.transform,
            self.info.width,
            self.info.height,
            raster_path=self.path,
        )

    def restricted(self, region: Region) -> RasterScene:
        """The same raster restricted to ``region`` (pixels of this scene's region); nothing is read."""
        part = copy.copy(self)
        r = Region(self.region.row_off + region.row_off, self.region.col_off + region.col_off, region.height, region.width)
        part.region, part.height, part.width = r, r.height, r.width
        part.transform = self.info.transform @ Affine.translation(r.col_off, r.row_off)
        part._cached = None
        part.exclude = ()
        part.score_region = None
        part.name = (
            f"{self.name}[{region.row_off}:{region.row_off + region.height},{region.col_off}:{region.col_off + region.width}]"
        )
        return part

    def _exclude(self, mask: np.ndarray, row: int, col: int, scale: float = 1.0) -> None:
        """Set ``ignore_index`` on labels that must not count, in place.

        ``exclude`` holds held-out blocks (and their buffer) of a validation split or a cross-validation
        fold (:mod:`terraseg.data.holdout`, :mod:`terraseg.training.cv`): their labels never reach training.
        ``score_region`` (a validation block read with context around it): labels outside it are ignored.
        Both are in pixels of the scene's region. ``scale``: overview pixels per window pixel.
        """
        h, w = mask.shape

        def box(r: Region) -> tuple[int, int, int, int]:
            return (
                int((r.row_off - row) * scale),
                int(np.ceil((r.row_off + r.height - row) * scale)),
                int((r.col_off - col) * scale),
                int(np.ceil((r.col_off + r.width - col) * scale)),
            )

        for r in self.exclude:
            r0, r1, c0, c1 = box(r)
            if r1 > 0 and c1 > 0 and r0 < h and c0 < w:
                mask[max(r0, 0) : min(r1, h), max(c0, 0) : min(c1, w)] = self.ignore_index
        if self.score_region is not None:
            r0, r1, c0, c1 = box(self.score_region)
            keep = np.zeros((h, w), dtype=bool)
            keep[max(r0, 0) : max(min(r1, h), 0), max(c0, 0) : max(min(c1, w), 0)] = True
            mask[~keep] = self.ignore_index

    def _read_direct(self, row: int, col: int, h: int, w: int, labels: bool, compact: bool = False) -> WindowRead:
        r0, c0 = row + self.region.row_off, col + self.region.col_off
        ds = self._dataset()
        image = read_window(ds, Window(c0, r0, w, h), self.bands, path=self.path)
        valid = valid_mask(image, self.nodata)
        extra = read_validity(ds, self.info, Window(c0, r0, w, h))  # alpha band or GDAL mask band
        if extra is not None:
            valid &= extra
        # outside the raster or the region: padding
        inside = np.zeros((h, w), dtype=bool)
        rr0, cc0 = max(row, 0), max(col, 0)
        rr1, cc1 = min(row + h, self.height), min(col + w, self.width)
        if rr1 > rr0 and cc1 > cc0:
            inside[rr0 - row : rr1 - row, cc0 - col : cc1 - col] = True
        valid &= inside
        mask = self._labels(row, col, h, w, valid) if labels and self.has_labels else None
        return WindowRead(image, valid, compact_mask(mask) if compact else mask)

    def read_mask(self, row: int, col: int, height: int, width: int, valid: np.ndarray) -> np.ndarray | None:
        """As :meth:`Scene.read_mask`; a streamed raster rasterizes or reads only the labels (no second image read)."""
        if not self.has_labels:
            return None
        if self._cache_ok:
            return super().read_mask(row, col, height, width, valid)
        return self._labels(row, col, height, width, valid)  # no second read of the image

    def _cache_key(self) -> tuple:
        """What the cached region depends on: file, region, bands, labels and the label exclusions (built once
        for the current exclusions: a key is hashed for every window read)."""
        r = self.region
        state = (r, self.exclude, self.score_region)
        cached = self.__dict__.get("_key")
        if cached is None or cached[0] != state:
            key = _HashedKey(
                (
                    "raster",
                    self.path,
                    (r.row_off, r.col_off, r.height, r.width),
                    tuple(self.bands),
                    self.mask_path,
                    self.mask_nodata,
                    id(self._rasterizer),
                    id(self._aoi),
                    self.exclude,
                    self.score_region,
                    self.ignore_index,
                )
            )
            self._key = cached = (state, key)
        return cached[1]

    def read(self, row: int, col: int, height: int, width: int, labels: bool = True, compact: bool = False) -> WindowRead:
        """As :meth:`Scene.read`: from the process's byte-limited cache of decoded regions
        (:mod:`terraseg.io.cache`) when the region is small enough; past the cache's budget, from the run's
        spill store (decoded once); else window by window from GDAL."""
        if not self._cache_ok:
            return self._read_direct(row, col, height, width, labels, compact)
        key = self._cache_key()
        c = None if self._past_budget else CACHE.get(key)  # past the budget: never in the memory cache
        if c is None:
            spilled = SPILL.read(key, row, col, height, width, self._fills)
            if spilled is not None:  # decoded once before: read from the run's store on disk
                m = spilled.get("mask")
                return WindowRead(
                    spilled["image"],
                    spilled["valid"][0].view(bool),
                    widen_mask(m[0], compact) if (labels and m is not None) else None,
                )
            # past the memory budget (more scenes than it holds, or a region over a quarter of it) and no store
            # (or its budget spent): read the window only
            if (CACHE.thrashing() or self._past_budget) and not SPILL.enabled:
                return self._read_direct(row, col, height, width, labels, compact)
            c = self._keep(key, self._decoded_region())
        image = crop_window(c.image, row, col, height, width, 0)
        valid = crop_window(c.valid, row, col, height, width, False)
        mask = (
            widen_mask(crop_window(c.mask, row, col, height, width, self.ignore_index), compact)
            if (labels and c.mask is not None)
            else None
        )
        return WindowRead(image, valid, mask)

    def _keep(self, key, c: WindowRead) -> WindowRead:
        """Keep a decoded region for the next windows: in the memory cache while it has room for it, else in the
        spill store (and, when the region alone is past the cache's budget, never offered to the cache again)."""
        nbytes = c.image.nbytes + c.valid.nbytes + (c.mask.nbytes if c.mask is not None else 0)
        if CACHE.thrashing() or self._past_budget or not CACHE.put(key, c, nbytes):
            self._past_budget = self._past_budget or not CACHE.thrashing()
            _spill(key, c)
        return c

    def stage(self) -> bool:
        """Decode and rasterize the whole region into the run's spill store, unless it is there already.

        Returns:
            Whether it was written now.
        """
        key = self._cache_key()
        if not self._cache_ok or not SPILL.enabled or SPILL.has(key):
            return False
        return _spill(key, self._decoded_region())

    def _decoded_region(self) -> WindowRead:
        """The whole region decoded and its labels rasterized (the mask in its smallest integer type)."""
        c = self._read_direct(0, 0, self.height, self.width, True)
        return WindowRead(c.image, c.valid, compact_mask(c.mask))

    def _subsampled(self, f: int, oh: int, ow: int) -> tuple[np.ndarray, np.ndarray]:
        """Every ``f``-th pixel of the region (``(C, oh, ow)`` image, ``(oh, ow)`` validity), read in full-resolution
        blocks of at most about 8 million values (memory O(bands)), each block decoded once."""
        image = np.zeros((self.count, oh, ow), dtype=self.dtype)
        valid = np.zeros((oh, ow), dtype=bool)
        side = max(f, int(np.sqrt(8_000_000 / max(self.count, 1))) // f * f)
        for r in range(0, oh * f, side):
            for c in range(0, ow * f, side):
                h, w = min(side, oh * f - r), min(side, ow * f - c)
                blk = self._read_direct(r, c, h, w, labels=False)
                image[:, r // f : (r + h) // f, c // f : (c + w) // f] = blk.image[:, ::f, ::f][:, : h // f, : w // f]
                valid[r // f : (r + h) // f, c // f : (c + w) // f] = blk.valid[::f, ::f][: h // f, : w // f]
        return image, valid

    def _overview(self, max_pixels: int) -> WindowRead:
        if self._cache_ok or self.height * self.width <= max_pixels:
            return self.read(0, 0, self.height, self.width)
        # decimated read: nearest-neighbour overview of the region, labels rasterized at that scale
        f = int(np.ceil(np.sqrt(self.height * self.width / max_pixels)))
        oh, ow = max(self.height // f, 1), max(self.width // f, 1)
        win = Window(self.region.col_off, self.region.row_off, self.width, self.height)
        ds = self._dataset()
        if ds.overviews(self.bands[0]):  # internal overviews (a COG): GDAL's decimated read uses them
            image = ds.read(self.bands, window=win, out_shape=(self.count, oh, ow))
            valid = valid_mask(image, self.nodata)
            extra = read_validity(ds, self.info, win, out_shape=(oh, ow))
            if extra is not None:
                valid &= extra
        else:  # no overviews: GDAL would decode every tile once per band; read full-resolution blocks once and subsample
            image, valid = self._subsampled(f, oh, ow)
        return WindowRead(image, valid, self._labels_decimated(oh, ow, valid))

    def _labels_decimated(self, oh: int, ow: int, valid: np.ndarray) -> np.ndarray | None:
        """The region's labels at ``(oh, ow)`` (rasterized at that scale, or a decimated mask read), ignore outside ``valid``."""
        mask = None
        if self._rasterizer is not None:
            from rasterio.features import rasterize

            t = self.transform @ Affine.scale(self.width / ow, self.height / oh)
            out = np.zeros((oh, ow), dtype=np.int32)
            shapes = list(self._rasterizer.shapes())
            if shapes:
                rasterize(shapes, out=out, transform=t)
            mask = out.astype(np.int64)
        elif self.mask_path:
            win = Window(self.region.col_off, self.region.row_off, self.width, self.height)
            with open_raster(self.mask_path) as mds:
                mask = self._class_ids(mds.read(1, window=win, out_shape=(oh, ow)).astype(np.int64))
        if mask is not None:
            mask[~valid] = self.ignore_index
            if self._aoi is not None:
                from rasterio.features import rasterize

                inside = np.zeros((oh, ow), dtype=np.uint8)
                shapes = list(self._aoi.shapes())
                if shapes:
                    rasterize(shapes, out=inside, transform=self.transform @ Affine.scale(self.width / ow, self.height / oh))
                mask[inside == 0] = self.ignore_index
            self._exclude(mask, 0, 0, scale=oh / self.height)
        return mask

    def label_overview(self, max_pixels: int) -> np.ndarray | None:
        """The labels of the whole region, decimated to at most about ``max_pixels``: ``(oh, ow)`` int64.

        The imagery is read only when it can mark pixels invalid (nodata, an alpha or mask band, float
        NaN); otherwise only the labels are rasterized or read, so a project's hold-out and class census
        cost a labels pass, not an image decode (and never fill the window cache).

        Args:
            max_pixels: the largest overview, in pixels.
        """
        if not self.has_labels:
            return None
        imagery_free = (
            self.nodata is None
            and self.info.alpha is None
            and not self.info.dataset_mask
            and np.dtype(self.dtype).kind in "iub"
            and self.region.row_off >= 0
            and self.region.col_off >= 0
            and self.region.row_off + self.height <= self.info.height
            and self.region.col_off + self.width <= self.info.width
        )
        if not imagery_free:
            return self._overview(max_pixels).mask
        f = max(1, int(np.ceil(np.sqrt(self.height * self.width / max_pixels))))
        oh, ow = max(self.height // f, 1), max(self.width // f, 1)
        return self._labels_decimated(oh, ow, np.ones((oh, ow), dtype=bool))
