"""Maps GIS software reads as maps: class names and colours as a legend, internal overviews, named probability bands.

GDAL itself is asked (the libgdal rasterio ships, through its C API; ``gdalinfo`` too where it is installed):
category names and the raster attribute table of band 1, and the overview count.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import rasterio

from conftest import make_bundle, make_geotiff
from terraseg import predict
from terraseg.config import ClassSpec
from terraseg.io.predictions import overview_factors


def _libgdal() -> ctypes.CDLL:
    libs = Path(rasterio.__file__).resolve().parent.parent / "rasterio.libs"
    found = sorted(glob.glob(str(libs / "libgdal*.so*"))) or [ctypes.util.find_library("gdal") or "libgdal.so"]
    gdal = ctypes.CDLL(found[0])
    gdal.GDALAllRegister()
    gdal.GDALOpen.restype = ctypes.c_void_p
    gdal.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    gdal.GDALGetRasterBand.restype = ctypes.c_void_p
    gdal.GDALGetRasterBand.argtypes = [ctypes.c_void_p, ctypes.c_int]
    gdal.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    gdal.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    gdal.GDALGetOverviewCount.argtypes = [ctypes.c_void_p]
    gdal.GDALGetDefaultRAT.restype = ctypes.c_void_p
    gdal.GDALGetDefaultRAT.argtypes = [ctypes.c_void_p]
    gdal.GDALRATGetRowCount.argtypes = [ctypes.c_void_p]
    gdal.GDALRATGetColumnCount.argtypes = [ctypes.c_void_p]
    gdal.GDALRATGetNameOfCol.restype = ctypes.c_char_p
    gdal.GDALRATGetNameOfCol.argtypes = [ctypes.c_void_p, ctypes.c_int]
    gdal.GDALRATGetValueAsString.restype = ctypes.c_char_p
    gdal.GDALRATGetValueAsString.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    gdal.GDALClose.argtypes = [ctypes.c_void_p]
    gdal.GDALGetMetadata.restype = ctypes.c_void_p
    gdal.GDALGetMetadata.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return gdal


def _read_with_gdal(path: Path) -> tuple[list[str], int, list[list[str]], list[str]]:
    """(category names, overview count, attribute-table rows, column names) of band 1, as GDAL reads them."""
    gdal = _libgdal()
    ds = gdal.GDALOpen(str(path).encode(), 0)
    assert ds, f"GDAL cannot open {path}"
    try:
        band = gdal.GDALGetRasterBand(ds, 1)
        gdal.GDALGetMetadata(band, None)  # as gdalinfo and QGIS do first: the GeoTIFF driver loads the side-car then
        names_p = gdal.GDALGetRasterCategoryNames(band)
        names = []
        i = 0
        while names_p and names_p[i] is not None:
            names.append(names_p[i].decode())
            i += 1
        rat = gdal.GDALGetDefaultRAT(band)
        cols = [gdal.GDALRATGetNameOfCol(rat, c).decode() for c in range(gdal.GDALRATGetColumnCount(rat))] if rat else []
        rows = (
            [
                [gdal.GDALRATGetValueAsString(rat, r, c).decode() for c in range(len(cols))]
                for r in range(gdal.GDALRATGetRowCount(rat))
            ]
            if rat
            else []
        )
        return names, gdal.GDALGetOverviewCount(band), rows, cols
    finally:
        gdal.GDALClose(ds)


def test_predicted_class_map_carries_class_names_overviews_and_named_probabilities(tmp_path):
    classes = [
        ClassSpec(name="background", color="#000000"),
        ClassSpec(name="building", color="#ff3030"),
        ClassSpec(name="water", color="#3060ff"),
    ]
    bundle = make_bundle(classes=classes, path=tmp_path / "m.terraseg", window=64)
    big, _, _ = make_geotiff(tmp_path / "big.tif", height=1100, width=1300, squares=False)
    small, _, _ = make_geotiff(tmp_path / "small.tif", height=200, width=300, squares=False)
    predict(bundle, [big, small], tmp_path / "out", probabilities=True, window=256, backend="torch", precision="32")

    names, overviews, rows, cols = _read_with_gdal(tmp_path / "out" / "big.tif")
    assert names == ["background", "building", "water"]
    assert overviews == len(overview_factors(1100, 1300)) == 2
    assert cols[:2] == ["Value", "Class"] and [r[:2] for r in rows] == [["0", "background"], ["1", "building"], ["2", "water"]]
    assert rows[1][2:5] == ["255", "48", "48"]  # the class colour, as in the colour table
    with rasterio.open(tmp_path / "out" / "big.tif") as ds:
        assert ds.colormap(1)[1][:3] == (255, 48, 48)
        assert ds.overviews(1) == [2, 4]
    with rasterio.open(tmp_path / "out" / "big_probs.tif") as ds:
        assert ds.descriptions == ("background", "building", "water") and ds.overviews(1) == [2, 4]
        assert np.isfinite(ds.read(2, out_shape=(110, 130))).all()  # read through an overview

    names_small, overviews_small, _, _ = _read_with_gdal(tmp_path / "out" / "small.tif")
    assert names_small == ["background", "building", "water"] and overviews_small == 0  # 300 px: none needed
    assert not [p for p in os.listdir(tmp_path / "out") if p.startswith(".")]  # no temporary file left

    if shutil.which("gdalinfo"):
        info = subprocess.run(["gdalinfo", str(tmp_path / "out" / "big.tif")], capture_output=True, text=True).stdout
        assert "Categories:" in info and "building" in info and "Overviews:" in info
