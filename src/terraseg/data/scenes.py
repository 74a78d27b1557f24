"""Scenes: a pixel grid (raster or plain image) with optional labels, read window by window.

A :class:`Scene` is what every sampler, the predictor and the evaluator read from. ``read`` returns
the raw pixels of any window (padded outside the scene or its region), a validity mask (False for
nodata and padding) and the class mask (``ignore_index`` where unknown). Georeferencing travels
with the scene (``crs``, ``transform``) and is never recomputed later.

Two kinds:

* :class:`terraseg.data.rasters.RasterScene`: a GeoTIFF (any GDAL raster) of any band count and dtype, labelled by
  a vector file (rasterized per window after reprojection) or a mask raster on the same grid. Small scenes are cached
  in memory; large ones are read window by window.
* :class:`ArrayScene` (here): a plain image/mask pair (PNG, JPEG, TIFF), loaded on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.crs import CRS
from rasterio.transform import Affine

from terraseg.errors import InputFileError
from terraseg.io.cache import CACHE, compact_mask
from terraseg.io.images import read_image_valid, read_mask
from terraseg.io.raster import Grid


@dataclass(frozen=True)
class Region:
    """A rectangle of a scene in pixels: ``row_off``, ``col_off``, ``height``, ``width``."""

    row_off: int
    col_off: int
    height: int
    width: int


@dataclass
class WindowRead:
    """The result of :meth:`Scene.read`.

    Attributes:
        image: ``(C, h, w)`` raw pixels in the scene's dtype.
        valid: ``(h, w)`` bool, False for nodata and for padding outside the scene/region.
        mask: ``(h, w)`` int64 class ids with ``ignore_index`` where unknown (read with ``compact=True``: the
            smallest integer type holding the ids and ``ignore_index``, uint8 for most tasks), or None without labels.
    """

    image: np.ndarray
    valid: np.ndarray
    mask: np.ndarray | None


def widen_mask(mask: np.ndarray, compact: bool) -> np.ndarray:
    """A stored (compact) class mask as read: as it is when ``compact``, else int64.

    Args:
        mask: ``(H, W)`` class ids in their smallest integer type.
        compact: keep that type (the training loader ships uint8 masks).
    """
    return mask if compact else mask.astype(np.int64)


def crop_window(a: np.ndarray, row: int, col: int, h: int, w: int, fill) -> np.ndarray:
    """Window ``(row, col, h, w)`` of the last two axes of ``a``, padded with ``fill``.

    Args:
        a: ``(..., H, W)`` array.
        row: top of the window in pixels (negative or past the edge: padded).
        col: left of the window in pixels.
        h: window height in pixels.
        w: window width in pixels.
        fill: the value of pixels outside ``a``.
    """
    H, W = a.shape[-2:]
    out = np.full(a.shape[:-2] + (h, w), fill, dtype=a.dtype)
    r0, c0, r1, c1 = max(row, 0), max(col, 0), min(row + h, H), min(col + w, W)
    if r1 > r0 and c1 > c0:
        out[..., r0 - row : r1 - row, c0 - col : c1 - col] = a[..., r0:r1, c0:c1]
    return out


class Scene:
    """Base class. Coordinates passed to :meth:`read` are pixels relative to the scene's region."""

    @property
    def grid(self) -> Grid:
        """The scene's grid: size in pixels, CRS and transform of its top-left pixel."""
        return Grid(self.width, self.height, self.crs, self.transform)

    def band_descriptions(self) -> list[str] | None:
        """Names of the bands read (e.g. Sentinel-2 B1...B12 from a GeoTIFF), when every one is set; else None."""
        return None

    name: str
    path: str  # the file read (an image, or a raster), for messages
    exclude: tuple[Region, ...] = ()  # labels never used here (held-out blocks and their buffer)
    _cached: WindowRead | None = None  # the decoded region, when it is held
    height: int
    width: int
    count: int
    dtype: str
    crs: CRS | None
    transform: Affine
    nodata: float | None
    ignore_index: int
    has_labels: bool

    def read(self, row: int, col: int, height: int, width: int, labels: bool = True, compact: bool = False) -> WindowRead:
        """Read a window; see :class:`WindowRead`.

        Args:
            row: top-left pixel of the window in the scene's region (negative or past the edge: padded).
            col: top-left pixel of the window in the scene's region (negative or past the edge: padded).
            height: window size in pixels.
            width: window size in pixels.
            labels: read the labels too.
            compact: the mask in its smallest integer type, not widened to int64 (the training loader ships uint8
                masks).
        """
        raise NotImplementedError

    def read_mask(self, row: int, col: int, height: int, width: int, valid: np.ndarray) -> np.ndarray | None:
        """Labels of a window whose validity is already known (e.g. from the predictor's read).

        Returns:
            ``(h, w)`` int64 with ``ignore_index`` where ``valid`` is False, or None without labels.
        """
        mask = self.read(row, col, height, width).mask
        if mask is not None:
            mask = mask.copy()
            mask[~valid] = self.ignore_index
        return mask

    # -- whole-scene helpers used by samplers and statistics ------------------------------------
    def _overview(self, max_pixels: int) -> WindowRead:
        """A (possibly decimated) read of the whole region, for statistics and class locations."""
        return self.read(0, 0, self.height, self.width)

    def label_overview(self, max_pixels: int) -> np.ndarray | None:
        """The labels of the whole region (``(oh, ow)`` int64, possibly decimated), or None without labels."""
        return self._overview(max_pixels).mask if self.has_labels else None

    def sample_pixels(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Up to ``n`` valid pixels drawn uniformly: ``(C, k)`` raw values."""
        ov = self._overview(max(n * 4, 1 << 20))
        px = ov.image[:, ov.valid]
        if px.shape[1] > n:
            px = px[:, rng.choice(px.shape[1], n, replace=False)]
        return px

    def class_locations(self, max_per_class: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
        """Pixel locations of each non-background class (id >= 1): ``{class_id: (k, 2) rows, cols}``.

        Used to centre training windows on rare classes. Locations come from a decimated overview
        for scenes too large to hold in memory, scaled back to full-resolution pixels.

        Args:
            max_per_class: locations kept per class (a seeded sample).
            rng: the sampling generator.
        """
        return self.class_census(max_per_class, rng)[0]

    def class_census(self, max_per_class: int, rng: np.random.Generator) -> tuple[dict[int, np.ndarray], dict[int, int], int]:
        """One overview read: class locations (:meth:`class_locations`), pixels per class and labelled pixels.

        Args:
            max_per_class: locations kept per class.
            rng: the sampling generator.

        Returns:
            ``(locations, {class_id: full-resolution pixels}, labelled pixels)``; empty for an unlabelled scene.
        """
        if not self.has_labels:
            return {}, {}, 0
        mask = self.label_overview(1 << 22)
        assert mask is not None
        sy, sx = self.height / mask.shape[0], self.width / mask.shape[1]
        locs: dict[int, np.ndarray] = {}
        counts: dict[int, int] = {}
        values, n = np.unique(mask, return_counts=True)
        labelled = 0
        for c, k in zip(values, n):
            if c == self.ignore_index:
                continue
            labelled += int(k * sy * sx)
            if c == 0:
                continue
            counts[int(c)] = int(k * sy * sx)
            rows, cols = np.nonzero(mask == c)
            if len(rows) > max_per_class:
                pick = rng.choice(len(rows), max_per_class, replace=False)
                rows, cols = rows[pick], cols[pick]
            locs[int(c)] = np.stack([(rows * sy).astype(np.int64), (cols * sx).astype(np.int64)], axis=1)
        return locs, counts, labelled

    def window_transform(self, row: int, col: int) -> Affine:
        """Affine transform of a window whose top-left pixel is ``(row, col)`` of the region."""
        return self.transform @ Affine.translation(col, row)

    def window_bounds(self, row: int, col: int, height: int, width: int) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of a window in CRS units."""
        return self.window_georef(row, col, height, width)[1]

    def window_georef(
        self, row: int, col: int, height: int, width: int
    ) -> tuple[tuple[float, ...], tuple[float, float, float, float]]:
        """A window's transform ``(a, b, c, d, e, f)`` and bounds ``(left, bottom, right, top)`` in CRS units, as plain floats.

        The same numbers as :meth:`window_transform` and :meth:`window_bounds` (the window's four corners mapped
        through the affine transform), in a tenth of their time: every training sample carries them.
        """
        a, b, c, d, e, f = self.transform[:6]
        c, f = c + a * col + b * row, f + d * col + e * row
        if b == 0 and d == 0:  # as rasterio.transform.array_bounds: (west, south, east, north) of a north-up grid
            return (a, b, c, d, e, f), (c, f + e * height, c + a * width, f)
        xs = (c, c + a * width, c + b * height, c + a * width + b * height)
        ys = (f, f + d * width, f + e * height, f + d * width + e * height)
        return (a, b, c, d, e, f), (min(xs), min(ys), max(xs), max(ys))

    def crs_wkt(self) -> str | None:
        """The scene's CRS as WKT, or None: exported once per scene (an export takes about 20 µs, and every
        training sample names its CRS)."""
        wkt = self.__dict__.get("_crs_wkt", 0)
        if wkt == 0:
            wkt = self.__dict__["_crs_wkt"] = self.crs.to_wkt() if self.crs else None
        return wkt

    def _check_classes(self, mask: np.ndarray, num_classes: int | None, source: str) -> None:
        if num_classes is None:
            return
        bad = (mask >= num_classes) & (mask != self.ignore_index) | (mask < 0)
        if bad.any():
            vals = ", ".join(str(v) for v in np.unique(mask[bad])[:8])
            raise InputFileError(
                f"{source}: mask values {vals} are not class ids of this task (0..{num_classes - 1}, ignore {self.ignore_index})."
            )


class ArrayScene(Scene):
    """A plain image with an optional mask image (PNG/JPEG/TIFF), loaded on first use and cached.

    Args:
        image_path: image file.
        mask_path: mask file or None.
        binarize: map mask values > 0 to 1.
        value_offset: added to mask values; negatives -> ignore.
        ignore_index: unknown-pixel value.
        num_classes: when given, out-of-range values raise.

    Raises:
        InputFileError: unreadable files, or mask size differs from image size (raised on first read).
    """

    crs = None
    transform = Affine.identity()
    nodata = None

    def __init__(
        self,
        image_path: str | Path,
        mask_path: str | Path | None = None,
        binarize: bool = False,
        value_offset: int = 0,
        ignore_index: int = 255,
        num_classes: int | None = None,
        name: str | None = None,
    ) -> None:
        self.path = str(image_path)
        self.mask_path = str(mask_path) if mask_path else None
        self.binarize = binarize
        self.value_offset = value_offset
        self.ignore_index = ignore_index
        self.num_classes = num_classes
        self.name = name or Path(image_path).stem
        self.has_labels = mask_path is not None
        self._cached: WindowRead | None = None
        # size without decoding the whole file
        from PIL import Image

        try:
            with Image.open(self.path) as im:
                self.width, self.height = im.size
                bands = len(im.getbands())
                # palette images expand to RGB; an alpha band is validity, not data (io.images.read_image_valid)
                self.count = 3 if im.mode in ("P", "PA") else bands - ("A" in im.getbands() and bands > 1)
                self.dtype = "uint16" if im.mode.startswith("I;16") else ("int32" if im.mode == "I" else "uint8")
        except FileNotFoundError:
            raise InputFileError(f"{self.path}: file not found.") from None
        except Exception:
            arr, ok = read_image_valid(self.path)
            self._cached = WindowRead(arr, ok if ok is not None else np.ones(arr.shape[1:], bool), None)
            self.count, self.height, self.width = arr.shape
            self.dtype = str(arr.dtype)

    def load(self, compact: bool = False) -> WindowRead:
        """The decoded image (and mask), from the process's byte-limited cache (:mod:`terraseg.io.cache`) after the first read.

        Args:
            compact: the mask in its smallest integer type (as cached), not widened to int64.
        """
        key = ("array", self.path, self.mask_path, self.binarize, self.value_offset, self.ignore_index)
        hit = CACHE.get(key)
        if hit is not None:
            return WindowRead(hit.image, hit.valid, widen_mask(hit.mask, compact) if hit.mask is not None else None)
        if self._cached is not None:  # decoded at construction (a format Pillow could not size)
            image, valid = self._cached.image, self._cached.valid
            self._cached = None
        else:
            image, ok = read_image_valid(self.path)
            valid = ok if ok is not None else np.ones(image.shape[1:], dtype=bool)
        self.count, self.height, self.width = image.shape
        self.dtype = str(image.dtype)
        mask = None
        if self.mask_path:
            raw = read_mask(self.mask_path)
            if raw.shape != image.shape[1:]:
                raise InputFileError(
                    f"{self.mask_path}: mask is {raw.shape[1]}x{raw.shape[0]} pixels but image {self.path} is "
                    f"{image.shape[2]}x{image.shape[1]}."
                )
            mask = raw.astype(np.int64)
            if self.binarize:
                mask = (mask > 0).astype(np.int64)
            elif self.value_offset:
                mask += self.value_offset
                mask[mask < 0] = self.ignore_index
            self._check_classes(mask, self.num_classes, self.mask_path)
            mask[~valid] = self.ignore_index
        small = compact_mask(mask)
        CACHE.put(key, WindowRead(image, valid, small), image.nbytes + valid.nbytes + (small.nbytes if small is not None else 0))
        return WindowRead(image, valid, small if compact else mask)

    def read(self, row: int, col: int, height: int, width: int, labels: bool = True, compact: bool = False) -> WindowRead:
        """As :meth:`Scene.read`, cropped from the decoded image (padding outside it)."""
        c = self.load(compact)
        image = crop_window(c.image, row, col, height, width, 0)
        valid = crop_window(c.valid, row, col, height, width, False)
        mask = crop_window(c.mask, row, col, height, width, self.ignore_index) if (labels and c.mask is not None) else None
        return WindowRead(image, valid, mask)
