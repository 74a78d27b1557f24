"""The one prediction writer: class ids and probabilities, block by block, onto a source grid.

Every prediction raster terraseg writes (``predict``, ``evaluate``'s outputs, the API's GeoTIFF
and GeoJSON responses, grid classification) goes through :class:`PredictionWriter`, so one rule
decides their encoding (Raster Vision's label store plays the same role):

* class ids: ``uint8`` with nodata 255 and a colour table (class colours, nodata transparent) when
  there are fewer than 255 classes, else ``uint16`` with nodata 65535; the class names as GDAL category
  names and a thematic raster attribute table (value, class, colour) in the GeoTIFF's PAM side-car
  ``<file>.aux.xml``, where GDAL keeps both for GeoTIFFs (QGIS shows them as the layer's legend, ``gdalinfo``
  lists them);
* internal overviews (factors 2, 4, ... down to a longer side of 256-511 px; nearest for class ids,
  average for probabilities) when the raster is larger than 1,024 x 1,024 pixels, so GIS viewers draw it
  at any zoom without building ``.ovr`` files;
* probabilities: ``float32``, one band per class (band descriptions = class names), NaN where the
  input had no data;
* GeoTIFFs: the source grid's CRS, transform and size, tiled 256 x 256, compressed with the codec
  asked for (DEFLATE by default, a horizontal predictor for integer ids), compressed on all cores
  (GDAL ``NUM_THREADS``), optionally converted to a Cloud-Optimized GeoTIFF;
* plain images (a ``.png`` target): class ids as a PNG, buffered in memory (PNG cannot be written
  by window; used for PNG/JPEG inputs, which are small);
* every file is written under a temporary name and renamed when complete.

Blocks are given as class ids with ``-1`` (or a ``valid`` mask) marking nodata, in pixels of the
target grid; they may arrive in any order, each written once.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from terraseg.io.outputs import create_raster, geotiff_profile
from terraseg.io.raster import Grid

CODECS = ("deflate", "zstd", "lzw", "none")
OVERVIEW_ABOVE = 1024  # pixels: a raster with a side larger than this gets internal overviews


def overview_factors(height: int, width: int, above: int = OVERVIEW_ABOVE) -> list[int]:
    """Overview decimation factors for a raster of ``height`` x ``width`` pixels.

    Args:
        height: size in pixels.
        width: size in pixels.
        above: no overviews unless a side exceeds this many pixels.

    Returns:
        ``[2, 4, ...]`` (halving levels, as ``gdaladdo``) down to the coarsest whose longer side is 256-511
        pixels, or ``[]`` for a raster of at most ``above`` pixels a side.
    """
    if max(height, width) <= above:
        return []
    factors, f = [], 2
    while max(height, width) / f >= 256:
        factors.append(f)
        f *= 2
    return factors


def write_class_legend(
    path: str | Path, class_names: list[str], colors: list[str] | None = None, nodata: int | None = None
) -> Path:
    """Write the class names of a class-id GeoTIFF where GDAL reads them: its PAM side-car ``<path>.aux.xml``.

    Band 1 gets GDAL category names (index = class id) and a thematic raster attribute table with the
    columns ``Value`` (GFU_MinMax), ``Class`` (GFU_Name) and ``Red``/``Green``/``Blue``/``Alpha`` (GFU_Red...),
    one row per class, in GDAL's PAM XML format (GDAL RFC 40, ``GDALRasterAttributeTable::Serialize``).
    QGIS (3.30 and later) shows the table as the legend; ``gdalinfo`` prints both. The file is written under
    a temporary name and renamed.

    Args:
        path: the class-id GeoTIFF.
        class_names: K names, class id order.
        colors: K ``'#rrggbb'`` or None.
        nodata: the raster's nodata value (its row, if below 256, is left out of the table).

    Returns:
        The side-car's path.
    """
    import xml.etree.ElementTree as ET

    from terraseg.io.atomic import atomic_path

    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    cats = ET.SubElement(band, "CategoryNames")
    for name in class_names:
        ET.SubElement(cats, "Category").text = name
    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    fields = [("Value", 0, 5), ("Class", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8), ("Alpha", 0, 9)]
    for i, (name, ftype, usage) in enumerate(fields):
        defn = ET.SubElement(rat, "FieldDefn", index=str(i))
        ET.SubElement(defn, "Name").text = name
        ET.SubElement(defn, "Type").text = str(ftype)
        ET.SubElement(defn, "Usage").text = str(usage)
    for k, name in enumerate(class_names):
        r, g, b = hex_to_rgb(colors[k]) if colors and k < len(colors) else (0, 0, 0)
        row = ET.SubElement(rat, "Row", index=str(k))
        for value in (k, name, r, g, b, 255):
            ET.SubElement(row, "F").text = str(value)
    ET.indent(root)
    side = Path(str(path) + ".aux.xml")
    with atomic_path(side) as tmp:
        tmp.write_bytes(ET.tostring(root, encoding="utf-8") + b"\n")
    return side


def class_encoding(num_classes: int) -> tuple[str, int]:
    """``(dtype, nodata)`` of a class-id raster with ``num_classes`` classes.

    Args:
        num_classes: K, the number of classes.

    Returns:
        ``("uint8", 255)`` below 255 classes, else ``("uint16", 65535)``.
    """
    return ("uint8", 255) if num_classes < 255 else ("uint16", 65535)


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """``'#rrggbb'`` -> ``(r, g, b)`` integers in 0..255.

    Args:
        color: colour as ``'#rrggbb'`` (the leading '#' is optional).

    Returns:
        ``(r, g, b)`` integers in 0..255.
    """
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def encode_class_ids(class_ids: np.ndarray, num_classes: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Class ids in the raster encoding of :func:`class_encoding`.

    Args:
        class_ids: ``(H, W)`` integer class ids; negative values mean nodata. Ids already in the encoding's dtype (uint8
            below 255 classes) are taken as encoded: the nodata value marks nodata.
        num_classes: K.
        valid: optional ``(H, W)`` bool, False for nodata.

    Returns:
        ``(H, W)`` uint8 (or uint16) ids with the nodata value where not valid.
    """
    dtype, nodata = class_encoding(num_classes)
    if class_ids.dtype == np.dtype(dtype):
        return class_ids if valid is None else np.where(valid, class_ids, nodata).astype(dtype)
    bad = class_ids < 0
    if valid is not None:
        bad = bad | ~valid
    return np.where(bad, nodata, class_ids).astype(dtype)


class PredictionWriter:
    """Streams prediction blocks into a class-id raster and, optionally, a probability raster.

    Use as a context manager; the files appear under their final names only when the block exits
    without an error (nothing is left behind otherwise).

    Args:
        target: class-id file (``.tif`` for GeoTIFF, ``.png`` for a plain image).
        grid: the source grid (:class:`terraseg.io.raster.Grid`): size, CRS, transform.
        class_names: K names (probability band descriptions).
        colors: K ``'#rrggbb'`` colours (colour table).
        probabilities: path of the float32 probability GeoTIFF, or None.
        compress: GDAL codec for GeoTIFFs: 'deflate', 'zstd', 'lzw' or 'none'.
        level: codec level (None: GDAL's default; 1 is fastest).
        cog: convert GeoTIFF outputs to Cloud-Optimized GeoTIFFs when complete.
        threads: GDAL compression threads ('ALL_CPUS' or a count).
        confidence: optional float32 confidence raster (one band per name in ``confidence_bands``, NaN nodata).

    Raises:
        ConfigError: an unknown codec or target suffix.
        OutputError: the target cannot be written.
    """

    def __init__(
        self,
        target: str | Path,
        grid: Grid,
        class_names: list[str],
        colors: list[str] | None = None,
        probabilities: str | Path | None = None,
        compress: str = "deflate",
        level: int | None = None,
        cog: bool = False,
        threads: str | int = "ALL_CPUS",
        confidence: str | Path | None = None,
        confidence_bands: tuple[str, ...] = ("max_probability", "margin", "normalized_entropy"),
    ) -> None:
        from terraseg.errors import ConfigError

        self.target, self.grid = Path(target), grid
        self.class_names, self.colors = list(class_names), list(colors or [])
        self.num_classes = len(class_names)
        self.dtype, self.nodata = class_encoding(self.num_classes)
        self.prob_target = Path(probabilities) if probabilities else None
        self.conf_target = Path(confidence) if confidence else None
        self.conf_bands = confidence_bands
        self._conf: Any = None
        if compress not in CODECS:
            raise ConfigError(f"unknown compression '{compress}'; use one of {', '.join(CODECS)}.")
        if self.target.suffix.lower() not in (".tif", ".tiff", ".png"):
            raise ConfigError(f"{self.target}: predictions are written as .tif or .png.")
        self.compress, self.level, self.cog, self.threads = compress, level, cog, threads
        self._stack = contextlib.ExitStack()
        self._ids: Any = None
        self._probs: Any = None
        self._buffer: np.ndarray | None = None

    def _profile(self, count: int, dtype: str, nodata: float | None, predictor: int) -> dict[str, Any]:
        p = geotiff_profile(self.grid, count, dtype, nodata, compress=self.compress, predictor=predictor)
        if self.compress != "none":
            p["NUM_THREADS"] = str(self.threads)
            if self.level is not None:
                p[{"deflate": "ZLEVEL", "zstd": "ZSTD_LEVEL", "lzw": "ZLEVEL"}[self.compress]] = self.level
        return p

    def __enter__(self) -> PredictionWriter:
        with self._stack as stack:
            if self.target.suffix.lower() == ".png":
                self._buffer = np.full((self.grid.height, self.grid.width), self.nodata, dtype=self.dtype)
            else:
                self._ids = stack.enter_context(
                    create_raster(self.target, cog=self.cog, **self._profile(1, self.dtype, self.nodata, 2))
                )
                # the class names travel with the raster (vectorize and GIS users read them back)
                self._ids.update_tags(1, class_names=json.dumps(self.class_names))
                self._ids.set_band_description(1, "class")
            if self.prob_target is not None:
                self._probs = stack.enter_context(
                    create_raster(self.prob_target, cog=self.cog, **self._profile(self.num_classes, "float32", float("nan"), 3))
                )
                for k, name in enumerate(self.class_names):
                    self._probs.set_band_description(k + 1, name)
            if self.conf_target is not None:
                self._conf = stack.enter_context(
                    create_raster(
                        self.conf_target, cog=self.cog, **self._profile(len(self.conf_bands), "float32", float("nan"), 3)
                    )
                )
                for k, name in enumerate(self.conf_bands):
                    self._conf.set_band_description(k + 1, name)
            self._stack = stack.pop_all()
        return self

    def write(
        self,
        row: int,
        col: int,
        class_ids: np.ndarray,
        probabilities: np.ndarray | None = None,
        valid: np.ndarray | None = None,
        confidence: np.ndarray | None = None,
    ) -> None:
        """Write one block whose top-left pixel is ``(row, col)`` of the grid.

        Args:
            row: offset in pixels.
            col: offset in pixels.
            class_ids: ``(h, w)`` integer ids, negative = nodata.
            probabilities: ``(K, h, w)`` float32, required when the writer has a probability target.
            valid: ``(h, w)`` bool, False where the input had no data.
        """
        from rasterio.windows import Window

        h, w = class_ids.shape
        ids = encode_class_ids(class_ids, self.num_classes, valid)
        if self._buffer is not None:
            self._buffer[row : row + h, col : col + w] = ids
        else:
            self._ids.write(ids[None], window=Window(col, row, w, h))
        if self._probs is not None:
            if probabilities is None:
                raise ValueError("this writer has a probability target: give probabilities with every block")
            p = probabilities.astype(np.float32, copy=True)
            p[:, (ids == self.nodata)] = np.nan
            self._probs.write(p, window=Window(col, row, w, h))
        if self._conf is not None:
            if confidence is None:
                raise ValueError("this writer has a confidence target: give confidence bands with every block")
            self._conf.write(confidence.astype(np.float32, copy=False), window=Window(col, row, w, h))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None and self._ids is not None and self.dtype == "uint8" and self.colors:
            cmap = {i: hex_to_rgb(c) + (255,) for i, c in enumerate(self.colors[:255])}
            self._ids.write_colormap(1, cmap | {self.nodata: (0, 0, 0, 0)})
        if exc_type is None and not self.cog:  # the COG driver builds its own overviews
            self._overviews()
        if exc_type is None and self._buffer is not None:
            from terraseg.io.images import write_png

            self._stack.callback(write_png, self.target, self._buffer)
        self._stack.__exit__(exc_type, exc, tb)
        if exc_type is None and self._ids is not None:
            write_class_legend(self.target, self.class_names, self.colors, self.nodata)

    def _overviews(self) -> None:
        """Internal overviews of each GeoTIFF written, when larger than :data:`OVERVIEW_ABOVE` pixels a side."""
        from rasterio.enums import Resampling

        factors = overview_factors(self.grid.height, self.grid.width)
        if not factors:
            return
        for dst, method in ((self._ids, Resampling.nearest), (self._probs, Resampling.average), (self._conf, Resampling.average)):
            if dst is not None:
                dst.build_overviews(factors, method)
                dst.update_tags(ns="rio_overview", resampling=method.name)

    @property
    def paths(self) -> dict[str, Path]:
        """``{"prediction": path, "probabilities": path}`` (the latter only when written)."""
        out = {"prediction": self.target}
        if self.prob_target is not None:
            out["probabilities"] = self.prob_target
        if self.conf_target is not None:
            out["confidence"] = self.conf_target
        return out


def write_prediction(
    target: str | Path,
    grid: Grid,
    class_ids: np.ndarray,
    class_names: list[str],
    colors: list[str] | None = None,
    probabilities: np.ndarray | None = None,
    prob_target: str | Path | None = None,
    valid: np.ndarray | None = None,
    **options: Any,
) -> dict[str, Path]:
    """Write a whole in-memory prediction with :class:`PredictionWriter` (one block).

    Args:
        target: class-id file.
        grid: its grid.
        class_ids: ``(H, W)`` ids, negative = nodata.
        class_names: as :class:`PredictionWriter`.
        colors: as :class:`PredictionWriter`.
        probabilities: ``(K, H, W)`` float32 or None.
        prob_target: where to write ``probabilities``.
        valid: ``(H, W)`` bool or None.
        **options: ``compress``, ``level``, ``cog``, ``threads``.

    Returns:
        :attr:`PredictionWriter.paths`.
    """
    with PredictionWriter(target, grid, class_names, colors, prob_target if probabilities is not None else None, **options) as w:
        w.write(0, 0, class_ids, probabilities, valid)
    return w.paths


__all__ = [
    "CODECS",
    "OVERVIEW_ABOVE",
    "PredictionWriter",
    "class_encoding",
    "encode_class_ids",
    "hex_to_rgb",
    "overview_factors",
    "write_class_legend",
    "write_prediction",
]
