"""Alpha bands and GDAL mask bands are validity, never data: stats, training, predict and serve read them so."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from conftest import DATA, needs_data
from terraseg.data.rasters import RasterScene
from terraseg.data.scenes import ArrayScene
from terraseg.io.images import read_image_valid
from terraseg.io.raster import raster_info


def _rgba_tif(path, georef=True):
    rng = np.random.default_rng(0)
    img = rng.integers(1, 255, (4, 32, 40), dtype=np.uint8)
    img[3] = 255
    img[3, :, :10] = 0  # transparent strip
    prof = dict(driver="GTiff", height=32, width=40, count=4, dtype="uint8", photometric="RGB", alpha="YES")
    if georef:
        prof |= dict(crs="EPSG:32618", transform=from_origin(500000, 4500032, 1, 1))
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(img)
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    return path, img


def _masked_tif(path):
    rng = np.random.default_rng(1)
    img = rng.integers(1, 255, (3, 64, 64), dtype=np.uint8)
    prof = dict(
        driver="GTiff",
        height=64,
        width=64,
        count=3,
        dtype="uint8",
        crs="EPSG:32618",
        transform=from_origin(500000, 4500064, 1, 1),
        tiled=True,
        blockxsize=32,
        blockysize=32,
    )
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", **prof) as dst:
            dst.write(img)
            m = np.full((64, 64), 255, np.uint8)
            m[40:, :] = 0
            dst.write_mask(m)
    return path, img


def test_alpha_band_is_validity_not_a_data_band(tmp_path):
    path, img = _rgba_tif(tmp_path / "rgba.tif")
    info = raster_info(path)
    assert info.alpha == 4 and info.data_bands == [1, 2, 3]
    s = RasterScene(path)
    assert s.count == 3
    r = s.read(0, 0, 32, 40)
    np.testing.assert_array_equal(r.image, img[:3])
    assert not r.valid[:, :10].any() and r.valid[:, 10:].all()
    # a window at the edge keeps alpha alignment and pads as invalid
    r = s.read(-4, 5, 8, 8)
    assert not r.valid[:4].any() and not r.valid[4:, :5].any() and r.valid[4:, 5:].all()
    # selected explicitly, alpha is read as data (and still marks validity)
    assert RasterScene(path, bands=[1, 2, 3, 4]).count == 4


def test_gdal_mask_band_is_validity(tmp_path):
    path, _ = _masked_tif(tmp_path / "masked.tif")
    info = raster_info(path)
    assert info.dataset_mask and info.alpha is None
    s = RasterScene(path)
    r = s.read(0, 0, 64, 64)
    assert not r.valid[40:].any() and r.valid[:40].all()
    ov = s._overview(16 * 16)  # the decimated read used by statistics and sampling
    assert not ov.valid[-ov.valid.shape[0] // 3 :].any()


def test_rgba_png_alpha_is_validity(tmp_path):
    from PIL import Image

    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3] = 100
    rgba[..., 3] = 255
    rgba[:5, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "x.png")
    Image.fromarray(np.ones((20, 30), np.uint8)).save(tmp_path / "m.png")
    image, valid = read_image_valid(tmp_path / "x.png")
    assert image.shape == (3, 20, 30) and not valid[:5].any() and valid[5:].all()
    s = ArrayScene(tmp_path / "x.png", tmp_path / "m.png")
    assert s.count == 3
    r = s.read(0, 0, 20, 30)
    assert (r.mask[:5] == 255).all() and (r.mask[5:] == 1).all()


def test_three_band_bundle_takes_an_rgba_file(tmp_path):
    from terraseg.bundle import InputSpec
    from terraseg.data.normalize import NormStats

    path, _ = _rgba_tif(tmp_path / "rgba.tif")
    spec = InputSpec(bands=3, dtype="uint8", normalization=NormStats(method="none"), train_window=64, predict_window=256)
    assert spec.select_bands(RasterScene(path).count, str(path)) is None


@needs_data("sentinel2-kashin")
def test_kashin_chips_read_as_three_bands_with_alpha_validity():
    for p in sorted((DATA / "sentinel2-kashin").glob("*.tif"))[:2]:
        s = RasterScene(p)
        assert s.count == 3, p
        r = s.read(0, 0, s.height, s.width)
        assert r.valid.mean() > 0.9


def test_predict_and_stats_leave_masked_pixels_out(tmp_path, scene_files):
    import json

    import yaml
    from typer.testing import CliRunner

    from conftest import tiny_config
    from terraseg.cli.main import app

    cfg = tiny_config(
        tmp_path,
        scene_files,
        train={"max_epochs": 1, "seed": 0, "export_onnx": False, "calibrate": False, "choose_tiling": False},
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    assert runner.invoke(app, ["train", str(tmp_path / "c.yaml")]).exit_code == 0
    rgba, _ = _rgba_tif(tmp_path / "rgba.tif")
    masked, _ = _masked_tif(tmp_path / "masked.tif")
    res = runner.invoke(
        app, ["predict", str(tmp_path / "run" / "model.terraseg"), str(rgba), str(masked), "--out", str(tmp_path / "pred")]
    )
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "pred" / "rgba.tif") as ds:
        ids = ds.read(1)
        assert ds.nodata is not None and (ids[:, :10] == ds.nodata).all() and (ids[:, 10:] != ds.nodata).all()
    with rasterio.open(tmp_path / "pred" / "masked.tif") as ds:
        ids = ds.read(1)
        assert (ids[40:] == ds.nodata).all() and (ids[:40] != ds.nodata).all()
    res = runner.invoke(app, ["stats", str(masked), "--out", str(tmp_path / "stats")])
    assert res.exit_code == 0, res.output
    stats = json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert stats["nodata_fraction"] == pytest.approx(24 / 64)
    assert [b["valid_pixels"] for b in stats["bands"]] == [40 * 64] * 3  # the masked rows are not counted


def test_an_rgbn_nir_labelled_alpha_by_gdal_stays_data(tmp_path):
    """GDAL labels band 4 of a plain 4-band Byte GeoTIFF alpha; with a spread of values it is NIR, not transparency."""
    rng = np.random.default_rng(0)
    with rasterio.open(
        tmp_path / "rgbn.tif",
        "w",
        driver="GTiff",
        height=16,
        width=16,
        count=4,
        dtype="uint8",
        crs="EPSG:32618",
        transform=from_origin(0, 16, 1, 1),
    ) as dst:
        dst.write(rng.integers(0, 255, (4, 16, 16), dtype=np.uint8))
    with rasterio.open(tmp_path / "rgbn.tif") as ds:
        assert ds.colorinterp[3] == ColorInterp.alpha  # what GDAL says
    assert raster_info(tmp_path / "rgbn.tif").alpha is None and RasterScene(tmp_path / "rgbn.tif").count == 4
