"""Classical pixel baselines: features, class-balanced sampling, the three estimators through the
core's bundle / evaluate / predict, feature importance, safe loading, and bad input."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin
from typer.testing import CliRunner

from conftest import needs_data, shipped_config
from terraseg.bundle import Bundle
from terraseg.cli.main import app
from terraseg.config import ExperimentConfig
from terraseg.errors import BundleError, ConfigError
from terraseg.models.pixel import PixelFeatures, PixelModel

runner = CliRunner()
BANDS = ["blue", "green", "red", "nir"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def water_scene(path, h=160, w=200, seed=0):
    """4-band uint16 scene: water (class 1) is green > nir, land is nir > green; band values alone overlap."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    truth[(yy - h / 2) ** 2 / 3 + (xx - w / 3) ** 2 < 1500] = 1
    truth[:, int(w * 0.8) :] = 1
    img = rng.normal(1000, 250, (4, h, w))
    bright = rng.uniform(0.5, 2.0, (h, w))  # illumination varies: raw values overlap, ratios do not
    img[1] += np.where(truth == 1, 600, -300)
    img[3] += np.where(truth == 1, -300, 700)
    img = np.clip(img * bright, 1, 20000).astype(np.uint16)
    prof = dict(driver="GTiff", width=w, height=h, crs="EPSG:32633", transform=from_origin(400000, 6000000, 10, 10))
    with rasterio.open(path, "w", count=4, dtype="uint16", **prof) as d:
        d.write(img)
    mpath = path.with_name(path.stem + "_mask.tif")
    with rasterio.open(mpath, "w", count=1, dtype="uint8", **prof) as d:
        d.write(truth[None])
    return path, mpath, img, truth


def pixel_config(tmp_path, image, mask, arch="random_forest", **baseline) -> dict:
    return {
        "name": f"px-{arch}",
        "classes": [{"name": "land"}, {"name": "water", "color": "#1f77b4"}],
        "data": {"train": [{"kind": "scene", "image": str(image), "mask": str(mask)}], "val_fraction": 0.25, "band_names": BANDS},
        "model": {"arch": arch},
        "baseline": {"indices": ["ndwi", "ndvi"], "samples_per_class": 1500, "n_estimators": 30} | baseline,
        "tracking": {"enabled": False},
        "output_dir": str(tmp_path / arch),
    }


def test_features_indices_and_texture():
    rng = np.random.default_rng(0)
    img = rng.integers(1, 1000, (4, 20, 30)).astype(np.uint16)
    f = PixelFeatures(4, BANDS, ["ndvi", "ndwi"], 5)
    assert f.names[:6] == BANDS + ["ndvi", "ndwi"] and f.names[6] == "blue_mean5" and f.names[-1] == "nir_std5"
    x = f.compute(img)
    assert x.shape == (4 + 2 + 8, 20, 30) and x.dtype == np.float32
    g, r, n = img[1].astype(float), img[2].astype(float), img[3].astype(float)
    np.testing.assert_allclose(x[4], (n - r) / (n + r), rtol=1e-5)
    np.testing.assert_allclose(x[5], (g - n) / (g + n), rtol=1e-5)
    win = img[2, 8:13, 10:15].astype(float)  # interior pixel (10, 12): brute-force local mean / std
    assert x[6 + 2, 10, 12] == pytest.approx(win.mean(), rel=1e-4)
    assert x[6 + 4 + 2, 10, 12] == pytest.approx(win.std(), rel=1e-3)
    assert PixelFeatures(
        13, [f"B{i}" for i in (1, 2, 3, 4, 5, 6, 7, 8)] + ["B8A", "B9", "B10", "B11", "B12"], ["mndwi"], None
    ).index_bands == [("mndwi", 2, 11)]
    with pytest.raises(ConfigError, match="'ndbi' needs band 'swir1', which the input lacks"):
        PixelFeatures(4, BANDS, ["ndbi"], None)
    with pytest.raises(ConfigError, match="unknown index 'ndxx'"):
        PixelFeatures(4, BANDS, ["ndxx"], None)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["random_forest", "logistic_regression", "gradient_boosting"])
def test_train_evaluate_predict_each_estimator(tmp_path, arch):
    from terraseg.training.pixel import train_pixel

    img_path, mask_path, img, truth = water_scene(tmp_path / "s.tif")
    cfg = ExperimentConfig.model_validate(pixel_config(tmp_path, img_path, mask_path, arch))
    res = train_pixel(cfg)
    assert res.best["val/iou"] > 0.9, res.best  # the indices separate the classes
    b = Bundle.load(res.bundle_path)
    assert isinstance(b.model, PixelModel) and b.manifest.baseline["feature_names"][-2:] == ["ndwi", "ndvi"]
    rows = list(csv.DictReader(open(res.run_dir / "feature_importance.csv")))
    assert len(rows) == 6 and rows[0]["feature"] in ("ndwi", "ndvi")  # ratios beat raw bands under varying light
    assert (res.run_dir / "feature_importance.png").stat().st_size > 1000
    # predict through the sliding-window path (windows of 64 on a 160x200 scene) = the estimator on every pixel
    r = run("predict", res.bundle_path, img_path, "--out", tmp_path / "pr", "--window", 64)
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "pr" / "s.tif") as ds:
        pred = ds.read(1)
        assert ds.crs.to_epsg() == 32633
    X = b.model.features.compute(img).reshape(6, -1).T
    direct = b.model.estimator.predict(X).reshape(truth.shape)
    assert (pred == direct).mean() > 0.999
    r = run("evaluate", res.bundle_path, img_path, "--labels", mask_path, "--out", tmp_path / "ev")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["iou"] > 0.9


def test_texture_features_across_windows(tmp_path):
    from terraseg.data.sources import scene_from_path
    from terraseg.infer.sliding import predictor_for
    from terraseg.training.pixel import train_pixel

    img_path, mask_path, img, truth = water_scene(tmp_path / "s.tif", seed=1)
    res = train_pixel(ExperimentConfig.model_validate(pixel_config(tmp_path, img_path, mask_path, texture_window=7)))
    b = Bundle.load(res.bundle_path)
    ids, _ = predictor_for(b, window=64).predict_array(scene_from_path(img_path))
    whole = b.model.estimator.predict(b.model.features.compute(img).reshape(len(b.model.features.names), -1).T).reshape(
        truth.shape
    )
    assert (ids == whole).mean() > 0.995  # tiles overlap by the texture window; edges differ only by reflection


def test_sampling_is_class_balanced(tmp_path):
    from terraseg.data.sources import scene_from_path
    from terraseg.training.pixel import sample_pixels

    img_path, mask_path, _, truth = water_scene(tmp_path / "s.tif")
    scene = scene_from_path(img_path, labels=mask_path)
    X, y = sample_pixels([scene], PixelFeatures(4, BANDS, [], None), 2, 800, seed=0, block=64)
    assert np.bincount(y).tolist() == [800, 800] and X.shape == (1600, 4)
    X2, _ = sample_pixels([scene], PixelFeatures(4, BANDS, [], None), 2, 800, seed=0, block=64)
    np.testing.assert_array_equal(X, X2)  # seeded
    assert len({tuple(r) for r in X}) == 1600  # without replacement


def test_bundle_refuses_estimator_with_code(tmp_path):
    """A bundle whose estimator holds a function (here os.system) is refused, never executed."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    img_path, mask_path, *_ = water_scene(tmp_path / "s.tif")
    from terraseg.training.pixel import train_pixel

    res = train_pixel(ExperimentConfig.model_validate(pixel_config(tmp_path, img_path, mask_path, "logistic_regression")))
    b = Bundle.load(res.bundle_path)
    b.model.estimator = make_pipeline(FunctionTransformer(os.system), LogisticRegression())
    b.save(tmp_path / "evil.terraseg")
    with pytest.raises(BundleError, match="holds types terraseg does not load"):
        Bundle.load(tmp_path / "evil.terraseg")


def test_cli_bad_feature_band(tmp_path):
    img_path, mask_path, *_ = water_scene(tmp_path / "s.tif")
    cfg = pixel_config(tmp_path, img_path, mask_path, indices=["mndwi"])
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    r = run("train", p)
    assert r.exit_code == 1 and "'mndwi' needs band 'swir1', which the input lacks" in r.output
    assert not (tmp_path / "random_forest" / "model.terraseg").exists()


@pytest.mark.slow
@needs_data("sen1floods11", "S2")
def test_real_sen1floods11_forest(tmp_path):
    """13-band int16 Sentinel-2 with labels -1 = nodata; band names from the GeoTIFF descriptions."""
    p = shipped_config(
        "sen1floods11-rf", tmp_path, lambda c: c["baseline"].update(samples_per_class=2000, n_estimators=20), tracking=True
    )
    r = run("train", p)
    assert r.exit_code == 0, r.output
    b = Bundle.load(tmp_path / "run" / "model.terraseg")
    assert b.manifest.input.band_names[-1] == "B12" and "mndwi" in b.manifest.baseline["feature_names"]
    assert b.manifest.metrics["validation"]["val/iou"] > 0.4
    r = run("evaluate", tmp_path / "run" / "model.terraseg", p, "--split", "val", "--out", tmp_path / "ev")
    assert r.exit_code == 0, r.output
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    run_ = client.search_runs([client.get_experiment_by_name("sen1floods11-rf").experiment_id])[0]
    assert "model.terraseg" in [a.path for a in client.list_artifacts(run_.info.run_id)]
