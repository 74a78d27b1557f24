"""Input drift: the population stability index over fixed bins, from the raw training windows a bundle keeps."""

from __future__ import annotations

import io

import numpy as np
import rasterio

from terraseg.bundle import CALIBRATION, Bundle, BundleManifest, ClassSpec, InputSpec
from terraseg.config import ModelConfig
from terraseg.data.normalize import NormStats
from terraseg.data.scenes import RasterScene
from terraseg.models.factory import build_model
from terraseg.predict.drift import BINS, input_drift, population_stability, training_histograms

from conftest import make_geotiff


def _bundle(tmp_path, train: np.ndarray) -> Bundle:
    """A bundle whose statistics and calibration windows come from ``train`` ``(N, 1, h, w)`` uint8."""
    x = train.astype(np.float64)
    stats = NormStats("meanstd", [float(x.mean())], [float(x.std())], [float(np.percentile(x, 2))], [float(np.percentile(x, 98))])
    mc = ModelConfig(arch="plain_unet", base_filters=4, encoder_depth=3)
    m = BundleManifest(name="d", model=mc, classes=[ClassSpec(name="a"), ClassSpec(name="b")],
                       input=InputSpec(bands=1, dtype="uint8", normalization=stats, train_window=64, predict_window=64))
    buf = io.BytesIO()
    np.save(buf, train)
    return Bundle.load(Bundle(m, build_model(mc, 1, 2), {CALIBRATION: buf.getvalue()}).save(tmp_path / "d.terraseg"))


def _scene(tmp_path, name: str, pixels: np.ndarray) -> RasterScene:
    path, _, _ = make_geotiff(tmp_path / f"{name}.tif", 128, 128, bands=1, seed=0)
    with rasterio.open(path, "r+") as ds:
        ds.write(pixels.astype(np.uint8)[None])
    return RasterScene(path)


def test_psi_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    ref = np.bincount(rng.integers(0, 12, 50_000), minlength=12)[None].astype(float)
    same = np.bincount(rng.integers(0, 12, 50_000), minlength=12)[None].astype(float)
    shifted = np.bincount(np.clip(rng.integers(0, 12, 50_000) + 4, 0, 11), minlength=12)[None].astype(float)
    assert population_stability(same, ref)[0] < 0.01
    assert population_stability(shifted, ref)[0] > 1.0


def test_psi_catches_a_change_of_shape_that_mean_and_range_miss(tmp_path):
    """Same mean, same range, one mode instead of two: the standardised mean difference and the
    out-of-range share see nothing; the PSI does."""
    rng = np.random.default_rng(1)
    bimodal = np.where(rng.random((8, 1, 64, 64)) < 0.5, rng.normal(70, 8, (8, 1, 64, 64)), rng.normal(170, 8, (8, 1, 64, 64)))
    b = _bundle(tmp_path, bimodal.clip(0, 255).astype(np.uint8))
    ref = training_histograms(b, b.stats)
    assert ref is not None and ref.shape == (1, BINS + 2) and training_histograms(b, b.stats) is ref  # cached
    alike = np.where(rng.random((128, 128)) < 0.5, rng.normal(70, 8, (128, 128)), rng.normal(170, 8, (128, 128)))
    unimodal = rng.normal(120, 25, (128, 128))  # the same mean as the training pixels, inside their 2-98% range
    ok = input_drift(_scene(tmp_path, "alike", alike.clip(0, 255)), b.stats, reference=ref)
    bad = input_drift(_scene(tmp_path, "uni", unimodal.clip(0, 255)), b.stats, reference=ref)
    assert not ok.drifted and ok.psi[0] < 0.1
    assert abs(bad.smd[0]) < 0.2 and bad.out_of_range[0] < 0.05  # the older checks see nothing
    assert bad.drifted and bad.psi[0] > 0.25 and "PSI" in bad.message("uni.tif")
    assert bad.to_dict()["bands"]["B1"]["psi"] > 0.25
    assert input_drift(_scene(tmp_path, "alike2", alike.clip(0, 255)), b.stats).psi is None  # no reference: no PSI
