"""Plain (not georeferenced) images and masks: PNG, JPEG, TIFF.

Images come back as ``(C, H, W)`` arrays in their stored dtype, masks as ``(H, W)``.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from terraseg.errors import InputFileError
from terraseg.formats import IMAGE_SUFFIXES, is_geotiff  # noqa: F401  (IMAGE_SUFFIXES: re-exported)

# decompression-bomb guard: refuse images over this many pixels rather than allocate them
Image.MAX_IMAGE_PIXELS = 400_000_000


# what Pillow raises for damaged files: SyntaxError for broken PNG chunks, struct/zlib errors for cut or
# corrupt streams, ValueError in some decoders (found by tests/test_fuzz.py)
DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a plain image as ``(C, H, W)`` in its stored dtype (uint8 for PNG/JPEG), without its alpha band.

    TIFFs are read through rasterio (any band count and dtype); others through Pillow. An alpha band
    (a PNG's A channel, a TIFF band whose colour interpretation is alpha) is validity, never data:
    it is left out here; :func:`read_image_valid` returns it as a mask.

    Args:
        path: PNG, JPEG, BMP or TIFF file.

    Returns:
        ``(C, H, W)`` array: uint8 for PNG/JPEG (palette images expanded to RGB), the stored dtype for TIFF.

    Raises:
        InputFileError: missing file, or not a decodable image.
    """
    return read_image_valid(path)[0]


def read_image_valid(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a plain image and its validity: ``(image (C, H, W), valid (H, W) bool or None)``.

    ``valid`` is False where the alpha band (PNG A channel, TIFF alpha band) is 0 or a TIFF's GDAL
    per-dataset mask is 0; None when the file has neither (every pixel counts).

    Args:
        path: PNG, JPEG, BMP or TIFF file.

    Raises:
        InputFileError: missing file, or not a decodable image.
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"{p}: file not found.")
    if is_geotiff(p):
        from rasterio.windows import Window

        from terraseg.io.raster import info_of, open_raster, read_validity, read_window

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open_raster(p) as ds:
                info = info_of(ds, str(p))
                win = Window(0, 0, ds.width, ds.height)
                return read_window(ds, win, info.data_bands, path=str(p)), read_validity(ds, info, win)
    try:
        with Image.open(p) as opened:
            opened.load()
            im: Image.Image = opened
            if im.mode in ("P", "PA"):
                im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
            names = im.getbands()
            arr = np.asarray(im)
    except DECODE_ERRORS as e:
        raise InputFileError(f"{p}: not a readable image ({type(e).__name__}: {e}).") from None
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = np.moveaxis(arr, -1, 0)
    valid = None
    if "A" in names and len(names) > 1:
        a = names.index("A")
        valid = arr[a] > 0
        arr = np.delete(arr, a, axis=0)
    return np.ascontiguousarray(arr), valid


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a mask image as ``(H, W)`` integer class values (palette indexes are kept as ids).

    Args:
        path: PNG or TIFF mask (one band, or identical bands).

    Returns:
        ``(H, W)`` array of the stored integer dtype (uint8 / uint16 / int16 ...).

    Raises:
        InputFileError: missing, unreadable, or multi-band with differing bands.
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"{p}: mask file not found.")
    if is_geotiff(p):
        arr = read_image(p)
    else:
        try:
            with Image.open(p) as im:
                im.load()
                arr = np.asarray(im)  # 'P' mode keeps palette indexes = class ids
        except DECODE_ERRORS as e:
            raise InputFileError(f"{p}: not a readable mask image ({type(e).__name__}: {e}).") from None
        if arr.ndim == 3:
            arr = np.moveaxis(arr, -1, 0)
    if arr.ndim == 3:
        if arr.shape[0] > 1 and not (arr[: min(3, arr.shape[0])] == arr[:1]).all():
            raise InputFileError(f"{p}: mask has {arr.shape[0]} differing bands; expected one band of class ids.")
        arr = arr[0]
    return arr


def write_png(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``(H, W)`` uint8/uint16, or ``(1|3|4, H, W)`` uint8, as PNG, atomically (temp file + rename).

    Args:
        path: target file (its folder is created).
        array: ``(H, W)`` uint8/uint16 or ``(1|3|4, H, W)`` uint8.

    Raises:
        InputFileError: a band count or dtype PNG cannot hold.
        OutputError: the folder cannot be written.
    """
    from terraseg.io.atomic import atomic_path

    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and (array.shape[0] not in (3, 4) or array.dtype != np.uint8):
        raise InputFileError(f"{path}: PNG holds 1, 3 or 4 uint8 bands, not {array.shape[0]} {array.dtype} bands; use GeoTIFF.")
    a = array if array.ndim == 2 else np.moveaxis(array, 0, -1)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(a)).save(tmp, format="PNG")
