"""The one home of file formats terraseg reads, named by their suffixes (lower case, with the dot).

Every reader, lister and upload check takes its suffixes from here, so that "which files count as
images" has one answer. GDAL reads many more formats (https://gdal.org/drivers/raster/): any of them
can still be named as a file; these lists only decide what a *folder* of inputs contributes and which
decoder opens a file.
"""

from __future__ import annotations

from pathlib import Path

GEOTIFF_SUFFIXES = frozenset({".tif", ".tiff"})
"""GeoTIFF (and plain TIFF): read with rasterio, band descriptions and georeference kept."""
RASTER_SUFFIXES = GEOTIFF_SUFFIXES | {".vrt", ".img", ".jp2"}
"""Georeferenced rasters read window by window through GDAL (GeoTIFF, VRT mosaics, ERDAS Imagine, JPEG 2000)."""
PHOTO_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
"""Images without a georeference, decoded whole with Pillow; predictions of them are written as PNG."""
IMAGE_SUFFIXES = GEOTIFF_SUFFIXES | PHOTO_SUFFIXES
"""Whole images of a scene-classification data set (class folders, archives)."""
INPUT_SUFFIXES = RASTER_SUFFIXES | PHOTO_SUFFIXES
"""What a folder named as prediction (or planning) input contributes, recursively."""
MASK_SUFFIXES = frozenset({".tif", ".tiff", ".vrt", ".png"})
"""Mask rasters (one class id per pixel): lossless formats only (a JPEG would change class ids)."""
VECTOR_SUFFIXES = frozenset({".shp", ".zip", ".geojson", ".json", ".gpkg"})
"""Polygon label files (read with pyogrio; a .zip holds a shapefile)."""
UPLOAD_IMAGE_SUFFIXES = GEOTIFF_SUFFIXES | {".png", ".jpg", ".jpeg"}
"""Images the web service accepts (a smaller set than the CLI's: every one is checked before decoding)."""
UPLOAD_VECTOR_SUFFIXES = frozenset({".geojson", ".json", ".gpkg", ".zip"})
"""Label files the web service accepts (no loose .shp: its side-cars cannot come in one upload)."""


def suffix(path: str | Path) -> str:
    """The lower-case suffix of ``path`` (``'.tif'``), for a GDAL virtual path too (``/vsicurl/https://.../a.TIF``).

    Args:
        path: a file path or GDAL path.
    """
    return Path(str(path)).suffix.lower()


def is_config(path: str | Path | None) -> bool:
    """Whether ``path`` names a config YAML (``.yaml`` / ``.yml``) rather than data.

    Args:
        path: a command's data argument, or None.
    """
    return path is not None and suffix(path) in (".yaml", ".yml")


def is_geotiff(path: str | Path) -> bool:
    """Whether ``path`` names a (Geo)TIFF by its suffix.

    Args:
        path: a file path or GDAL path.
    """
    return suffix(path) in GEOTIFF_SUFFIXES


def is_photo(path: str | Path) -> bool:
    """Whether ``path`` names an image without georeference (PNG, JPEG, BMP) by its suffix.

    Args:
        path: a file path.
    """
    return suffix(path) in PHOTO_SUFFIXES


def is_mask_raster(path: str | Path) -> bool:
    """Whether ``path`` names a mask raster (rather than a vector label file) by its suffix.

    Args:
        path: a label file's path.
    """
    return suffix(path) in MASK_SUFFIXES


__all__ = [
    "GEOTIFF_SUFFIXES",
    "IMAGE_SUFFIXES",
    "INPUT_SUFFIXES",
    "MASK_SUFFIXES",
    "PHOTO_SUFFIXES",
    "RASTER_SUFFIXES",
    "UPLOAD_IMAGE_SUFFIXES",
    "UPLOAD_VECTOR_SUFFIXES",
    "VECTOR_SUFFIXES",
    "is_geotiff",
    "is_mask_raster",
    "is_photo",
    "suffix",
]
