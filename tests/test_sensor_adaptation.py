"""Sensor adaptation is declared, never silent: --bands, bit depth by rule or refused, band-count messages that say what works."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from typer.testing import CliRunner

from conftest import make_geotiff
from terraseg.cli.main import app

runner = CliRunner()


@pytest.fixture
def bundle(tiny_bundle):
    return tiny_bundle


def _raster(path, data, descriptions=None, nbits=None):
    c, h, w = data.shape
    opts = {"nbits": nbits} if nbits else {}
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=h,
        width=w,
        count=c,
        dtype=data.dtype,
        crs="EPSG:32618",
        transform=from_origin(500000, 4500000, 1, 1),
        photometric="MINISBLACK",
        **opts,
    ) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or []):
            dst.set_band_description(i + 1, d)
    return path


def _predict(bundle, path, out, *extra):
    res = runner.invoke(app, ["predict", str(bundle), str(path), "--out", str(out), *extra])
    ids = None
    if res.exit_code == 0:
        with rasterio.open(out / f"{path.stem}.tif") as ds:
            ids = ds.read(1)
    return res, ids


def test_bands_select_and_reorder_by_index_or_name(tmp_path, bundle):
    rgb = make_geotiff(tmp_path / "rgb.tif", 64, 64, seed=3)[1]
    five = np.concatenate([rgb[::-1], rgb[:2]])  # blue, green, red, red, green
    _raster(tmp_path / "five.tif", five, ["blue", "green", "red", "red2", "green2"])
    _raster(tmp_path / "ref.tif", rgb)
    _, ref = _predict(bundle, tmp_path / "ref.tif", tmp_path / "a")
    res, by_index = _predict(bundle, tmp_path / "five.tif", tmp_path / "b", "--bands", "3,2,1")
    assert res.exit_code == 0, res.output
    res, by_name = _predict(bundle, tmp_path / "five.tif", tmp_path / "c", "--bands", "Red,green,BLUE")
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(by_index, ref)
    np.testing.assert_array_equal(by_name, ref)
    res, _ = _predict(bundle, tmp_path / "five.tif", tmp_path / "d", "--bands", "nir,green,blue")
    assert res.exit_code == 1 and "no band named 'nir'" in res.output and "1=blue" in res.output
    res, _ = _predict(bundle, tmp_path / "five.tif", tmp_path / "e", "--bands", "1,2")
    assert res.exit_code == 1 and "picks 2 bands but the model takes 3" in res.output


def test_band_count_mismatch_says_what_would_work(tmp_path, bundle):
    one = _raster(tmp_path / "pan.tif", np.full((1, 32, 32), 7, np.uint8))
    res, _ = _predict(bundle, one, tmp_path / "o")
    assert res.exit_code == 1 and "has 1 band but the model expects 3" in res.output and "terraseg stack" in res.output
    five = _raster(tmp_path / "five.tif", np.full((5, 32, 32), 7, np.uint8))
    res, _ = _predict(bundle, five, tmp_path / "o")
    assert res.exit_code == 1 and "--bands" in res.output


def test_another_bit_depth_is_refused_unless_a_rule_maps_it(tmp_path, bundle):
    rgb = make_geotiff(tmp_path / "rgb.tif", 64, 64, seed=4)[1]
    wide = rgb.astype(np.uint16) * 16  # 12-bit values in uint16
    _raster(tmp_path / "u16.tif", wide)
    res, _ = _predict(bundle, tmp_path / "u16.tif", tmp_path / "a")
    assert res.exit_code == 1 and "uint16 pixels" in res.output and "uint8" in res.output and "--input-range" in res.output
    assert "Traceback" not in res.output
    res, declared = _predict(bundle, tmp_path / "u16.tif", tmp_path / "b", "--input-range", "0,4080")
    assert res.exit_code == 0, res.output
    _, ref = _predict(bundle, tmp_path / "rgb.tif", tmp_path / "c")
    assert (declared == ref).mean() > 0.99  # the same picture once mapped onto 0-255
    _raster(tmp_path / "n12.tif", wide, nbits=12)
    res, by_rule = _predict(bundle, tmp_path / "n12.tif", tmp_path / "d")
    assert res.exit_code == 0, res.output  # NBITS=12: the rule is known
    res, same = _predict(bundle, tmp_path / "n12.tif", tmp_path / "e", "--input-range", "0,4095")
    np.testing.assert_array_equal(by_rule, same)
    res, _ = _predict(bundle, tmp_path / "u16.tif", tmp_path / "f", "--input-range", "9,1")
    assert res.exit_code == 1 and "above the low one" in res.output


def test_eight_bit_values_in_a_wider_container_are_taken_as_they_are(tmp_path, bundle):
    """Massachusetts 23429155_15.tif is uint16 holding 0-252: the values decide, not the container."""
    rgb = make_geotiff(tmp_path / "rgb.tif", 64, 64, seed=5)[1]
    _raster(tmp_path / "u16.tif", rgb.astype(np.uint16))
    res, wide = _predict(bundle, tmp_path / "u16.tif", tmp_path / "a")
    assert res.exit_code == 0, res.output
    _, ref = _predict(bundle, tmp_path / "rgb.tif", tmp_path / "b")
    np.testing.assert_array_equal(wide, ref)
