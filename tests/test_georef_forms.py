"""Georeferencing kept in every form GDAL gives: geotransform, GCPs with their CRS, RPCs; plain TIFFs stay TIFFs."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.rpc import RPC
from typer.testing import CliRunner

from terraseg.cli.main import app
from terraseg.config.prep import ChipConfig
from terraseg.prepare.chip import chip

runner = CliRunner()
H = W = 64


@pytest.fixture
def bundle(tiny_bundle):
    return tiny_bundle


def _pixels(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (3, H, W), dtype=np.uint8)


GCPS = [
    GroundControlPoint(row=0, col=0, x=500000.0, y=4500000.0, z=0.0, id="1"),
    GroundControlPoint(row=0, col=W, x=500064.0, y=4500000.0, z=0.0, id="2"),
    GroundControlPoint(row=H, col=0, x=500000.0, y=4499936.0, z=0.0, id="3"),
    GroundControlPoint(row=H, col=W, x=500064.0, y=4499936.0, z=0.0, id="4"),
]


def _rpc():
    num = [0.0] * 20
    den = [1.0] + [0.0] * 19
    return RPC(
        height_off=0.0,
        height_scale=100.0,
        lat_off=40.0,
        lat_scale=0.01,
        line_den_coeff=den,
        line_num_coeff=[0.0, 0.0, -1.0] + num[3:],
        line_off=H / 2,
        line_scale=H / 2,
        long_off=-75.0,
        long_scale=0.01,
        samp_den_coeff=den,
        samp_num_coeff=[0.0, 1.0] + num[2:],
        samp_off=W / 2,
        samp_scale=W / 2,
    )


def gcp_tif(path):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=H,
        width=W,
        count=3,
        dtype="uint8",
        gcps=GCPS,
        crs=CRS.from_epsg(32618),
        photometric="MINISBLACK",
    ) as dst:
        dst.write(_pixels())
    return path


def rpc_tif(path):
    with rasterio.open(
        path, "w", driver="GTiff", height=H, width=W, count=3, dtype="uint8", rpcs=_rpc(), photometric="MINISBLACK"
    ) as dst:
        dst.write(_pixels(1))
    return path


def plain_tif(path):
    with rasterio.open(path, "w", driver="GTiff", height=H, width=W, count=3, dtype="uint8", photometric="MINISBLACK") as dst:
        dst.write(_pixels(2))
    return path


def test_prediction_of_a_gcp_raster_carries_the_same_gcps(tmp_path, bundle):
    src = gcp_tif(tmp_path / "gcp.tif")
    res = runner.invoke(app, ["predict", str(bundle), str(src), "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "p" / "gcp.tif") as ds:
        pts, crs = ds.gcps
        assert crs == CRS.from_epsg(32618) and len(pts) == 4
        assert [(p.row, p.col, p.x, p.y) for p in pts] == [(p.row, p.col, p.x, p.y) for p in GCPS]
        assert ds.transform == rasterio.Affine.identity() and ds.nodata is not None


def test_prediction_of_an_rpc_raster_carries_the_same_rpcs(tmp_path, bundle):
    src = rpc_tif(tmp_path / "rpc.tif")
    res = runner.invoke(app, ["predict", str(bundle), str(src), "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "p" / "rpc.tif") as ds, rasterio.open(src) as s:
        assert ds.rpcs is not None and ds.rpcs.line_off == s.rpcs.line_off and ds.rpcs.samp_off == s.rpcs.samp_off
        assert ds.rpcs.samp_num_coeff == s.rpcs.samp_num_coeff and ds.rpcs.line_num_coeff == s.rpcs.line_num_coeff


def test_non_georeferenced_tiff_gives_a_tiff(tmp_path, bundle):
    src = plain_tif(tmp_path / "chip.tif")
    res = runner.invoke(app, ["predict", str(bundle), str(src), "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p" / "chip.tif").is_file() and not (tmp_path / "p" / "chip.png").exists()
    with rasterio.open(tmp_path / "p" / "chip.tif") as ds:
        assert ds.crs is None and ds.nodata is not None


def test_chips_keep_gcps_and_rpcs_never_a_pixel_transform_with_a_crs(tmp_path):
    import pandas as pd

    for make, name in ((gcp_tif, "gcp"), (rpc_tif, "rpc"), (plain_tif, "plain")):
        src = make(tmp_path / f"{name}.tif")
        r = chip(ChipConfig(images=[str(src)], out_dir=str(tmp_path / name), size=32, index_format="csv"))
        assert r.written == 4
        with rasterio.open(tmp_path / name / "images" / f"{name}_00032_00000.tif") as ds:
            if name == "gcp":
                pts, crs = ds.gcps
                assert crs == CRS.from_epsg(32618) and ds.transform == rasterio.Affine.identity()
                p0 = next(p for p in pts if p.id == "3")  # (row 64, col 0) of the scene = row 32 of this chip
                assert (p0.row, p0.col, p0.x, p0.y) == (32, 0, 500000.0, 4499936.0)
            elif name == "rpc":
                assert ds.rpcs.line_off == pytest.approx(H / 2 - 32) and ds.rpcs.samp_off == pytest.approx(W / 2)
            else:
                assert ds.crs is None
            assert not (ds.crs is not None and ds.transform.a == 1 and ds.transform.c in (0, 32))  # never UTM at the origin
        idx = pd.read_csv(next((tmp_path / name).glob("index*.csv")))
        assert (idx["miny"] < idx["maxy"]).all()
        if name == "plain":
            assert idx["crs"].isna().all() and set(idx["minx"]) == {0.0, 32.0}


COMPOUND = (
    'COMPD_CS["WGS 84 / UTM zone 18N + EGM96 height",PROJCS["WGS 84 / UTM zone 18N",GEOGCS["WGS 84",'
    'DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],'
    'UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],'
    'PARAMETER["central_meridian",-75],PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],'
    'PARAMETER["false_northing",0],UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]],'
    'VERT_CS["EGM96 height",VERT_DATUM["EGM96 geoid",2005],UNIT["metre",1],AXIS["Gravity-related height",UP]]]'
)


def compound_tif(path):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=H,
        width=W,
        count=3,
        dtype="uint8",
        crs=CRS.from_wkt(COMPOUND),
        transform=rasterio.transform.from_origin(500000, 4500000, 1, 1),
        photometric="MINISBLACK",
    ) as dst:
        dst.write(_pixels(3))
    return path


def test_compound_crs_outputs_carry_the_horizontal_part_with_a_note(tmp_path, bundle, caplog):
    """A compound CRS (UTM 18N + EGM96 height): chips and predictions are placed by its horizontal part, said once."""
    import logging

    import pyproj

    from terraseg.io.raster import raster_info

    src = compound_tif(tmp_path / "compd.tif")
    with caplog.at_level(logging.INFO, logger="terraseg.io.raster"):  # at INFO (--verbose): a refusal stays one line
        info = raster_info(src)
        res = runner.invoke(app, ["predict", str(bundle), str(src), "--out", str(tmp_path / "p")])
    assert pyproj.CRS.from_wkt(info.crs.to_wkt()).equals(pyproj.CRS.from_epsg(32618))
    assert "EGM96 height" in info.crs_note and "horizontal part" in info.crs_note
    assert res.exit_code == 0, res.output
    assert caplog.text.count("compound CRS") == 1  # said once per file
    r = chip(ChipConfig(images=[str(src)], out_dir=str(tmp_path / "c"), size=32, index_format="csv"))
    assert r.written == 4
    for out in (tmp_path / "p" / "compd.tif", tmp_path / "c" / "images" / "compd_00000_00032.tif"):
        with rasterio.open(out) as ds:
            assert pyproj.CRS.from_wkt(ds.crs.to_wkt()).equals(pyproj.CRS.from_epsg(32618)), out
            assert not ds.crs.to_wkt().startswith("COMPD_CS")
    with rasterio.open(tmp_path / "c" / "images" / "compd_00000_00032.tif") as ds:
        assert ds.transform.c == 500032 and ds.transform.f == 4500000  # placed, in metres of UTM 18N
