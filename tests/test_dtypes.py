"""Every data type GDAL reads gets a result or a one-line refusal from `stats` and `predict`, never a traceback."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from typer.testing import CliRunner

from terraseg.cli.main import app

runner = CliRunner()


@pytest.fixture
def bundle(tiny_bundle):
    return tiny_bundle


def _write(path, dtype, fill=None, size=(24, 20), bands=3):
    h, w = size
    rng = np.random.default_rng(0)
    prof = dict(
        driver="GTiff",
        height=h,
        width=w,
        count=bands,
        dtype=dtype,
        crs="EPSG:32618",
        transform=from_origin(500000, 4500000, 1, 1),
    )
    with rasterio.open(path, "w", **prof) as dst:
        if dtype == "complex_int16":
            return path
        if "complex" in dtype:
            data = (rng.random((bands, h, w)) + 1j * rng.random((bands, h, w))).astype(dtype)
        elif np.issubdtype(np.dtype(dtype), np.floating):
            data = (rng.random((bands, h, w)) * 100).astype(dtype)
        else:
            info = np.iinfo(np.dtype(dtype))
            data = rng.integers(max(info.min, -1000), min(info.max, 1000), (bands, h, w)).astype(dtype)
        if fill is not None:
            data[:] = fill
        dst.write(data)
    return path


CASES = {
    "float16": dict(dtype="float16"),
    "int8": dict(dtype="int8"),
    "int64": dict(dtype="int64"),
    "uint64": dict(dtype="uint64"),
    "one_pixel": dict(dtype="uint8", size=(1, 1)),
    "nan": dict(dtype="float32", fill=np.nan),
    "inf": dict(dtype="float32", fill=np.inf),
    "complex64": dict(dtype="complex64"),
    "complex_int16": dict(dtype="complex_int16"),
}


def _no_band(path):
    path.write_text('<VRTDataset rasterXSize="8" rasterYSize="8"></VRTDataset>')
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case", [*CASES, "no_band"])
def test_stats_and_predict_answer_or_refuse_in_one_line(tmp_path, bundle, case):
    if case == "float16" and "float16" not in getattr(rasterio.dtypes, "dtype_rev", {"float16": 0}):
        pytest.skip("this rasterio build cannot write float16 rasters")
    path = _no_band(tmp_path / "x.vrt") if case == "no_band" else _write(tmp_path / f"{case}.tif", **CASES[case])
    extra = [] if case in ("one_pixel", "no_band") else ["--input-range", "0,1000"]  # another bit depth than the uint8 model's
    for args in (
        ["stats", str(path), "--out", str(tmp_path / "s")],
        ["predict", str(bundle), str(path), "--out", str(tmp_path / "p"), *extra],
    ):
        res = runner.invoke(app, args)
        text = res.output + (str(res.exception) if res.exception and not isinstance(res.exception, SystemExit) else "")
        assert "Traceback" not in text and not (res.exception and not isinstance(res.exception, SystemExit)), (args, text)
        if res.exit_code:
            lines = [line for line in res.output.strip().splitlines() if line.strip()]
            assert res.exit_code == 1 and len(lines) <= 2, (args, res.output)
            assert str(path.name) in res.output
        if "complex" in case:
            assert res.exit_code == 1 and "complex" in res.output and "amplitude" in res.output
        if case == "no_band":  # GDAL itself refuses a band-less VRT; either way, one sentence
            assert res.exit_code == 1 and ("no raster band" in res.output or "not a readable raster" in res.output)
    if case in ("float16", "int8", "int64", "uint64", "one_pixel"):
        assert res.exit_code == 0, res.output  # predict worked
        with rasterio.open(tmp_path / "p" / f"{case}.tif") as ds:
            assert ds.crs is not None and (ds.width, ds.height) == (
                CASES[case].get("size", (24, 20))[1],
                CASES[case].get("size", (24, 20))[0],
            )


def test_non_finite_pixels_are_nodata_in_predictions(tmp_path, bundle):
    path = _write(tmp_path / "f.tif", "float32")
    with rasterio.open(path, "r+") as ds:
        data = ds.read()
        data[0, :4] = np.inf
        data[1, 4:8] = np.nan
        ds.write(data)
    res = runner.invoke(app, ["predict", str(bundle), str(path), "--out", str(tmp_path / "p"), "--input-range", "0,100"])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "p" / "f.tif") as ds:
        ids = ds.read(1)
        assert (ids[:8] == ds.nodata).all() and (ids[8:] != ds.nodata).all()
