"""Raster reading and writing by window, through rasterio/GDAL.

All arrays follow rasterio's order: images ``(C, H, W)``, masks ``(H, W)``. Windows are in pixels of
the source grid. Reads outside the raster are padded (``boundless``), so windows at scene edges are
never thrown away.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.enums import Interleaving
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.transform import Affine
from rasterio.windows import Window

from terraseg.errors import InputFileError

log = logging.getLogger(__name__)

from terraseg.formats import RASTER_SUFFIXES  # noqa: E402,F401  (re-exported)


@dataclass(frozen=True)
class RasterInfo:
    """Grid and band description of a raster.

    Attributes:
        path: file path.
        width: columns (pixels).
        height: rows (pixels).
        count: bands.
        dtype: numpy dtype name of the bands (first band).
        crs: coordinate reference system, or None for plain images.
        transform: affine pixel -> CRS transform (identity for plain images).
        nodata: nodata value of the bands, or None.
        alpha: 1-based index of the band whose colour interpretation is alpha (GDAL's GCI_AlphaBand), or None. It marks
            valid pixels (0 = transparent = nodata); it is no data band.
        dataset_mask: True when the raster carries a GDAL per-dataset mask band (an internal ``.msk`` / TIFF mask,
            GDAL's GMF_PER_DATASET without alpha or nodata): 0 marks nodata.
        gcps: ``(ground control points, their CRS)`` when the raster is placed by GCPs instead of a geotransform, else
            None.
        rpcs: rasterio ``RPC`` coefficients (satellite sensor model; kept beside a geotransform too), or None.
        crs_note: one sentence when the file's CRS is not the one used (a compound CRS: its horizontal part is used and
            written, :func:`horizontal_crs`), else None.
    """

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS | None
    transform: Affine
    nodata: float | None
    alpha: int | None = None
    dataset_mask: bool = False
    gcps: tuple | None = None
    rpcs: Any = None
    crs_note: str | None = None

    @property
    def data_bands(self) -> list[int]:
        """The 1-based bands that hold data: every band but the alpha band."""
        return [b for b in range(1, self.count + 1) if b != self.alpha]

    @property
    def georeferenced(self) -> bool:
        """True when the raster has a CRS and a non-identity transform."""
        return self.crs is not None and self.transform != Affine.identity()


def is_virtual(path: str | os.PathLike[str]) -> bool:
    """True for GDAL virtual file system paths (``/vsicurl/https://...``, ``/vsis3/...``, ``/vsizip/...``).

    These are read by GDAL itself (HTTP range requests for ``/vsicurl/``, see GDAL's "GDAL Virtual
    File Systems" page), so they are kept as strings (``pathlib`` would fold ``https://`` to ``https:/``)
    and not checked for on the local disk.

    Args:
        path: a file path or GDAL path.
    """
    return str(path).startswith("/vsi")


def open_reader(path: str | os.PathLike[str]) -> rasterio.DatasetReader:
    """Open a raster for reading and keep it open (the caller closes it): :func:`open_raster`'s checks and error.

    Args:
        path: any raster GDAL reads (GeoTIFF, VRT, JP2, PNG...).

    Returns:
        The open rasterio dataset (``NotGeoreferencedWarning`` silenced: plain images are welcome).

    Raises:
        InputFileError: the file is missing or not a readable raster.
    """
    p: Any = str(path) if is_virtual(path) else Path(path)
    if not is_virtual(path) and not p.exists():
        raise InputFileError(f"{p}: file not found.")
    try:
        with warnings.catch_warnings():  # plain images (PNG, JPEG, ungeoreferenced TIFF) are welcome
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            ds = rasterio.open(p)
    except (RasterioIOError, RasterioError) as e:
        raise InputFileError(f"{p}: not a readable raster ({_first_line(e)}).") from None
    try:
        check_bands(ds, str(p))
    except BaseException:
        ds.close()
        raise
    return ds


@contextlib.contextmanager
def open_raster(path: str | os.PathLike[str]) -> Iterator[rasterio.DatasetReader]:
    """Open a raster for reading, turning GDAL failures into one clear :class:`InputFileError`.

    Args:
        path: any raster GDAL reads (GeoTIFF, VRT, JP2, PNG...).

    Yields:
        The open rasterio dataset, closed when the block exits (``NotGeoreferencedWarning`` is silenced: plain images are welcome).

    Raises:
        InputFileError: the file is missing or not a readable raster.
    """
    ds = open_reader(path)
    try:
        yield ds
    finally:
        ds.close()


def quiet_gdal(quiet: bool = True) -> bool:
    """Keep GDAL's own ``ERROR 1:`` / ``Warning 1:`` lines off standard error (the CLI's default; ``--verbose`` shows them).

    GDAL prints every error and warning through its process-wide handler unless a thread has pushed its own; rasterio
    pushes one only while it opens a file, so errors raised while reading (a truncated strip, a bad tile) were printed
    as GDAL's lines before terraseg's one-line refusal. GDAL still records each error, so rasterio's exceptions, and the
    cause terraseg names, are unchanged. Applied to the GDAL library rasterio loaded (its wheel's, else the system's),
    through GDAL's ``CPLSetErrorHandler`` and its ``CPLQuietErrorHandler`` (GDAL "cpl_error.h"); pyogrio's copy of GDAL
    (vector files) raises its errors as exceptions with the messages in them.

    Args:
        quiet: True for GDAL's quiet handler, False for its default one (the messages on standard error).

    Returns:
        Whether the handler could be set (False where no GDAL library is found by name: nothing changes).
    """
    import ctypes
    import ctypes.util

    libs = sorted((Path(rasterio.__file__).parent.parent / "rasterio.libs").glob("libgdal*.so*"))
    name = str(libs[0]) if libs else ctypes.util.find_library("gdal")
    if not name:
        return False
    try:
        gdal = ctypes.CDLL(name)
    except OSError:
        return False
    gdal.CPLSetErrorHandler.restype = ctypes.c_void_p
    gdal.CPLSetErrorHandler.argtypes = [ctypes.c_void_p]
    handler = gdal.CPLQuietErrorHandler if quiet else gdal.CPLDefaultErrorHandler
    gdal.CPLSetErrorHandler(ctypes.cast(handler, ctypes.c_void_p))
    return True


MAX_BLOCK_BYTES = 2**30  # the largest block (tile or strip) a read may decode
MAX_BANDS = 4096  # the most bands a raster may declare (a 244-byte file declaring 65,535 held `stats` past a minute)
REAL_DTYPES = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16", "float32", "float64"}


def check_bands(ds: rasterio.DatasetReader, path: str) -> None:
    """Refuse, in one sentence with the fix, a raster whose bands terraseg cannot read as real numbers.

    Complex bands (GDAL CInt16/CInt32/CFloat32/CFloat64: SAR single-look complex data) have no
    single value per pixel to normalise; GDAL's VRT pixel functions ``mod`` (amplitude),
    ``intensity`` and ``phase`` derive real bands from them (GDAL "VRT driver" documentation,
    "Default Pixel Functions").

    Args:
        ds: the open dataset.
        path: its name, for the message.

    Raises:
        InputFileError: no band, over :data:`MAX_BANDS` bands, a block (tile or strip; of every band when pixel-
            interleaved) over :data:`MAX_BLOCK_BYTES` decoded, complex bands, or a data type numpy cannot hold.
    """
    if ds.count == 0:
        raise InputFileError(
            f"{path}: the file holds no raster band (a vector or metadata-only file?); give a raster with at least one band."
        )
    if ds.count > MAX_BANDS:
        raise InputFileError(
            f"{path}: the file declares {ds.count:,} bands, over the {MAX_BANDS:,} terraseg reads "
            "(hyperspectral cubes have a few hundred); pick the bands first (gdal_translate -b 1 -b 2 ...)."
        )
    rows, cols = ds.block_shapes[0]
    block = rows * cols * max(np.dtype(d).itemsize if d in REAL_DTYPES else 8 for d in ds.dtypes)
    if ds.interleaving == Interleaving.pixel:  # a block of a pixel-interleaved file holds every band
        block *= ds.count
    if block > MAX_BLOCK_BYTES:  # GDAL decodes a whole block to read any pixel of it: a hostile file holds the memory
        raise InputFileError(
            f"{path}: one block of the file is {rows:,} x {cols:,} pixels ({block / 2**30:,.1f} GiB decoded), "
            f"over the {MAX_BLOCK_BYTES / 2**30:g} GiB a read may take; rewrite it tiled "
            "(gdal_translate -co TILED=YES)."
        )
    odd = sorted({d for d in ds.dtypes if d not in REAL_DTYPES})
    if not odd:
        return
    if any("complex" in d for d in odd):
        raise InputFileError(
            f"{path}: complex bands ({', '.join(odd)}) cannot be used as they are; derive real bands first, e.g. amplitude "
            f"with GDAL's VRT pixel function: gdal_translate -ot Float32 of a VRT whose band uses PixelFunctionType 'mod' "
            f"(or 'intensity', 'phase')."
        )
    raise InputFileError(
        f"{path}: band data type {', '.join(odd)} is not supported; convert it to a real type (gdal_translate -ot Float32)."
    )


def _first_line(e: BaseException) -> str:
    """The first line of an error, or of the GDAL error behind rasterio's "See previous exception for details"."""
    while "previous exception" in str(e) and e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def raster_info(path: str | os.PathLike[str]) -> RasterInfo:
    """Describe a raster without reading its pixels.

    Args:
        path: any raster GDAL reads.

    Returns:
        :class:`RasterInfo` (size in pixels, band count, dtype, CRS, transform, nodata).

    Raises:
        InputFileError: missing or unreadable file.
    """
    with open_raster(path) as ds:
        return info_of(ds, str(path))


def info_of(ds: rasterio.DatasetReader, path: str) -> RasterInfo:
    """:class:`RasterInfo` of an open dataset.

    Args:
        ds: an open rasterio dataset.
        path: the file name recorded in the result.

    Returns:
        :class:`RasterInfo` (dtype of band 1).
    """
    from rasterio.enums import ColorInterp, MaskFlags

    alpha = next((i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha), None)
    if alpha is not None and not _looks_like_alpha(ds, alpha):
        alpha = None  # GDAL labels the 4th band of any 4-band Byte GeoTIFF alpha by default: an RGBN file's NIR stays data
    flags = ds.mask_flag_enums[0] if ds.count else []
    per_dataset = MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags and MaskFlags.nodata not in flags
    points, gcrs = ds.gcps
    gcps = (list(points), gcrs) if points else None
    # a raster placed only by GCPs or RPCs has an identity geotransform: its CRS belongs to the GCPs, not to pixel units
    placed = ds.transform != Affine.identity()
    crs, note = horizontal_crs(ds.crs if placed or not (gcps or ds.rpcs) else None, path)
    if gcps is not None and gcps[1] is not None:
        gcrs, gnote = horizontal_crs(gcps[1], path)
        gcps, note = (gcps[0], gcrs), note or gnote
    return RasterInfo(
        path=path,
        width=ds.width,
        height=ds.height,
        count=ds.count,
        dtype=ds.dtypes[0] if ds.count else "uint8",
        crs=crs,
        transform=ds.transform,
        nodata=ds.nodata,
        alpha=alpha,
        dataset_mask=per_dataset and alpha is None,
        gcps=gcps if not placed else None,
        rpcs=ds.rpcs,
        crs_note=note,  # RPCs beside a geotransform travel too
    )


_NOTED: set[str] = set()


def horizontal_crs(crs: CRS | None, path: str = "") -> tuple[CRS | None, str | None]:
    """The CRS terraseg uses for a raster: a compound CRS (horizontal + vertical, e.g. UTM + EGM96 height)
    becomes its horizontal part, with a note; any other CRS is returned as it is.

    A class map or a chip is placed in two dimensions: the vertical datum places no pixel, and GeoTIFF
    geokeys cannot always hold a compound CRS as given (GDAL rewrites it: TOWGS84 terms dropped, the
    vertical datum renamed). So outputs carry the horizontal part, exactly as the file gives it (a
    ``BoundCRS`` with its TOWGS84 terms stays one), and a note says so once per file (logged at INFO: ``--verbose``).

    Args:
        crs: the file's CRS, or None.
        path: the file, for the note.

    Returns:
        ``(crs to use, note or None)``.
    """
    if crs is None:
        return None, None
    wkt = crs.to_wkt()
    if not wkt.startswith(("COMPD_CS", "COMPOUNDCRS")):
        return crs, None
    import pyproj

    compound = pyproj.CRS.from_wkt(wkt)
    parts = compound.sub_crs_list
    if not parts:
        return crs, None
    horizontal = CRS.from_wkt(parts[0].to_wkt())
    vertical = ", ".join(f"'{p.name}'" for p in parts[1:]) or "none"
    note = (
        f"{path}: compound CRS '{compound.name}': its horizontal part '{parts[0].name}' places the outputs "
        f"(the vertical part {vertical} places no pixel of a 2-D map)."
    )
    if path not in _NOTED:  # shown with --verbose: the map is right either way, and a refusal stays one line
        _NOTED.add(path)
        log.info(note)
    return horizontal, note


def shifted_georef(gcps: tuple | None, rpcs: Any, row: int, col: int) -> tuple[tuple | None, Any]:
    """GCPs and RPCs of the window whose top-left pixel is ``(row, col)``: the same points, in the window's pixels.

    Args:
        gcps: ``(points, crs)`` or None.
        rpcs: rasterio ``RPC`` or None.
        row: the window's offset in pixels.
        col: the window's offset in pixels.

    Returns:
        ``(gcps, rpcs)`` for the window (GCP rows/cols and RPC line/sample offsets moved by the offset).
    """
    from rasterio.control import GroundControlPoint
    from rasterio.rpc import RPC

    g = None
    if gcps:
        pts, crs = gcps
        g = ([GroundControlPoint(row=p.row - row, col=p.col - col, x=p.x, y=p.y, z=p.z, id=p.id, info=p.info) for p in pts], crs)
    r = None
    if rpcs is not None:
        d = rpcs.to_dict()
        d["line_off"] = d["line_off"] - row
        d["samp_off"] = d["samp_off"] - col
        r = RPC(**d)
    return g, r


def _looks_like_alpha(ds: rasterio.DatasetReader, band: int) -> bool:
    """Whether a band labelled alpha holds transparency: at least 95% of a decimated read is 0 or the type's maximum.

    GDAL's GTiff driver writes ``PHOTOMETRIC=RGB`` with an unassociated alpha ``ExtraSamples`` for
    4-band Byte images unless told otherwise (GDAL GTiff driver documentation, ``PHOTOMETRIC`` and
    ``ALPHA`` creation options), so the near-infrared band of an RGBN file often arrives labelled
    alpha. A real alpha band is a mask (0 transparent, the maximum opaque; GDAL RFC 15), with at
    most a thin antialiased or resampled edge of values between.
    """
    h, w = min(ds.height, 256), min(ds.width, 256)
    try:
        values = ds.read(band, out_shape=(h, w))
    except (RasterioIOError, RasterioError):
        return True
    dtype = np.dtype(ds.dtypes[band - 1])
    top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    return bool(np.isin(values, [0, top]).mean() >= 0.95)


def read_validity(
    ds: rasterio.DatasetReader, info: RasterInfo, window: Window, out_shape: tuple[int, int] | None = None
) -> np.ndarray | None:
    """Validity from the raster's alpha band or GDAL per-dataset mask over a window (``None`` when it has neither).

    GDAL's mask model (RFC 15, "Band Masks"): an alpha band or a per-dataset mask band marks
    nodata with 0. Outside the raster the window is invalid.

    Args:
        ds: the open dataset.
        info: its :class:`RasterInfo`.
        window: pixel window, may extend beyond the raster.
        out_shape: ``(h, w)`` of a decimated read of the whole window (overviews), else None for full resolution.

    Returns:
        ``(h, w)`` bool, True where the alpha/mask marks data; or None when the raster has no alpha and no mask.
    """
    if info.alpha is None and not info.dataset_mask:
        return None
    if out_shape is not None:
        if info.alpha is not None:
            return ds.read(info.alpha, window=window, out_shape=out_shape) > 0
        return ds.read_masks(1, window=window, out_shape=out_shape) > 0
    if info.alpha is not None:
        return read_window(ds, window, [info.alpha], fill=0)[0] > 0
    h, w = int(window.height), int(window.width)
    r0, c0 = int(window.row_off), int(window.col_off)
    out = np.zeros((h, w), dtype=bool)
    rr0, cc0, rr1, cc1 = max(r0, 0), max(c0, 0), min(r0 + h, ds.height), min(c0 + w, ds.width)
    if rr1 > rr0 and cc1 > cc0:
        out[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = ds.read_masks(1, window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0)) > 0
    return out


def read_window(
    ds: rasterio.DatasetReader,
    window: Window,
    bands: list[int] | None = None,
    fill: float | None = None,
    path: str | None = None,
) -> np.ndarray:
    """Read a window, padding outside the raster with ``fill`` (default: nodata, else 0).

    Args:
        ds: open dataset.
        window: pixel window; may extend beyond the raster.
        bands: 1-based band indexes; default all.
        fill: value for pixels outside the raster.
        path: file name for error messages.

    Returns:
        ``(C, h, w)`` array in the raster's dtype.

    Raises:
        InputFileError: the pixel data cannot be decoded (corrupt blocks).
    """
    indexes = bands or list(range(1, ds.count + 1))
    if fill is None:
        fill = ds.nodata if ds.nodata is not None else 0
    h, w = int(window.height), int(window.width)
    r0, c0 = int(window.row_off), int(window.col_off)
    out = np.full((len(indexes), h, w), fill, dtype=ds.dtypes[indexes[0] - 1])
    # intersect with the raster, read that part, paste it
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r0 + h, ds.height), min(c0 + w, ds.width)
    if rr1 <= rr0 or cc1 <= cc0:
        return out
    try:
        data = ds.read(indexes, window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
    except (RasterioIOError, RasterioError) as e:
        raise InputFileError(f"{path or ds.name}: pixel data cannot be read, the file is corrupt ({_first_line(e)}).") from None
    out[:, rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = data
    return out


def valid_mask(image: np.ndarray, nodata: float | None) -> np.ndarray:
    """Pixels that hold data: ``(H, W)`` bool, False where every band equals ``nodata``.

    This follows GDAL's per-dataset mask for nodata values (a pixel is nodata when all bands are);
    for float rasters a pixel with NaN or infinity in any band is nodata too (it has no value a
    network could be fed).

    Args:
        image: ``(C, H, W)`` pixels of any dtype.
        nodata: the raster's nodata value, or None.

    Returns:
        ``(H, W)`` bool array, True where the pixel holds data.
    """
    invalid = np.zeros(image.shape[1:], dtype=bool)
    if np.issubdtype(image.dtype, np.floating):
        invalid |= ~np.isfinite(image).all(axis=0)  # NaN or inf in any band: no value a network can take
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        invalid |= (image == np.asarray(nodata, dtype=image.dtype)).all(axis=0)
    return ~invalid


@dataclass(frozen=True)
class Grid:
    """A raster grid without pixels: size in pixels, CRS (None for plain images) and affine transform.

    Attributes:
        width: columns and rows (pixels).
        height: columns and rows (pixels).
        crs: coordinate reference system or None.
        transform: pixel -> CRS affine transform (identity for plain images).
        gcps: ``(ground control points, CRS)`` of a raster placed by GCPs, else None.
        rpcs: rasterio ``RPC`` coefficients of a raster placed by a sensor model, else None.
    """

    width: int
    height: int
    crs: CRS | None = None
    transform: Affine = Affine.identity()
    gcps: tuple | None = None
    rpcs: Any = None

    @property
    def georeferenced(self) -> bool:
        """True when the grid has a CRS and a non-identity transform."""
        return self.crs is not None and self.transform != Affine.identity()

    @property
    def located(self) -> bool:
        """True when the grid can be placed on the Earth: a geotransform with a CRS, GCPs or RPCs."""
        return self.georeferenced or bool(self.gcps) or self.rpcs is not None


MAX_OPEN_DATASETS = 64  # open GDAL datasets kept per process and thread (a project has thousands of rasters)
_OPEN = threading.local()
_ALL_OPEN: weakref.WeakValueDictionary[int, OrderedDict] = weakref.WeakValueDictionary()  # every thread's handles


@atexit.register
def close_shared_datasets() -> None:
    """Close every thread's kept datasets while the interpreter is whole (registered with ``atexit``).

    Left to interpreter shutdown, a dataset is closed by rasterio's ``__del__`` after the modules it needs are gone
    (Python 3.12 and 3.13 clear the main thread's locals last), which printed ``Error in sys.excepthook`` after a
    successful command.
    """
    for handles in list(_ALL_OPEN.values()):
        while handles:
            handles.popitem()[1].close()


def shared_dataset(path: str) -> rasterio.DatasetReader:
    """An open rasterio dataset of ``path``, kept in a per-process, per-thread LRU of :data:`MAX_OPEN_DATASETS`.

    GDAL dataset handles are not thread-safe, nor valid across ``fork``: each reader thread (the
    predictor's parallel readers) and each loader worker gets its own. The least recently used handle
    is closed when a thread holds more, so a project of thousands of rasters keeps a bounded number open.

    Args:
        path: the raster (a local path or a GDAL ``/vsi`` path).
    """
    import os

    if getattr(_OPEN, "pid", None) != os.getpid():  # a forked worker: the parent's handles are not ours to use
        _OPEN.pid, _OPEN.handles = os.getpid(), OrderedDict()
        _ALL_OPEN[id(_OPEN.handles)] = _OPEN.handles
    handles: OrderedDict = _OPEN.handles
    ds = handles.get(path)
    if ds is not None and not ds.closed:
        handles.move_to_end(path)
        return ds
    ds = open_reader(path)
    handles[path] = ds
    while len(handles) > MAX_OPEN_DATASETS:
        handles.popitem(last=False)[1].close()
    return ds
