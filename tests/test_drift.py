"""Input drift: the population stability index over fixed bins, from the raw training windows a bundle keeps."""

from __future__ import annotations

import io

import numpy as np
import rasterio

from conftest import make_bundle, make_geotiff
from terraseg.bundle import CALIBRATION, Bundle
from terraseg.data.normalize import NormStats
from terraseg.data.rasters import RasterScene
from terraseg.infer.drift import (
    BINS,
    band_histograms,
    bin_edges,
    input_drift,
    population_stability,
    training_histograms,
    window_summary,
)


def _bundle(tmp_path, train: np.ndarray) -> Bundle:
    """A bundle whose statistics and calibration windows come from ``train`` ``(N, 1, h, w)`` uint8."""
    x = train.astype(np.float64)
    stats = NormStats("meanstd", [float(x.mean())], [float(x.std())], [float(np.percentile(x, 2))], [float(np.percentile(x, 98))])
    buf = io.BytesIO()
    np.save(buf, train)
    return Bundle.load(
        make_bundle(bands=1, stats=stats, name="d", extras={CALIBRATION: buf.getvalue()}, path=tmp_path / "d.terraseg")
    )


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


def test_fitted_thresholds_keep_a_varied_data_set_quiet_and_still_flag_another_sensor(tmp_path):
    """Photos of one varied set (brightness differs from image to image) must not be flagged; a different sensor must."""
    from terraseg.data.datasets import scene_statistics
    from terraseg.infer.drift import fit_drift

    scenes = []
    for i in range(12):
        path, img, _ = make_geotiff(tmp_path / f"s{i}.tif", 96, 96, seed=i)
        with rasterio.open(path, "r+") as ds:  # each image its own exposure: 0.5x to 1.5x
            ds.write((img.astype(np.float32) * (0.5 + i / 11)).clip(0, 255).astype(np.uint8))
        scenes.append(RasterScene(path))
    train, val = scenes[0::2], scenes[1::2]  # exposures interleaved: validation inside the training range
    stats = scene_statistics(train, "meanstd", (2.0, 98.0), 200_000, 0)
    profile = fit_drift(train, val, stats, 64, seed=0)
    assert profile["thresholds"]["psi"] >= 0.25 and profile["validation_windows"] > 0
    assert profile["false_alarm_rate"] <= 0.05
    t = profile["thresholds"]
    ref = np.asarray(profile["reference"])
    quiet = [
        input_drift(s, stats, reference=ref, smd_threshold=t["smd"], range_threshold=t["range"], psi_threshold=t["psi"])
        for s in scenes
    ]
    assert sum(r.drifted for r in quiet) <= 1
    # another sensor: inverted, low-contrast values
    path, img, _ = make_geotiff(tmp_path / "other.tif", 96, 96, seed=99)
    with rasterio.open(path, "r+") as ds:
        ds.write((255 - img // 4).astype(np.uint8))
    other = input_drift(
        RasterScene(path), stats, reference=ref, smd_threshold=t["smd"], range_threshold=t["range"], psi_threshold=t["psi"]
    )
    assert other.drifted


def test_the_integer_summary_equals_the_per_pixel_one():
    """uint8/uint16/int16 pixels are summarised from per-value counts: the same sum, range share and histogram."""
    rng = np.random.default_rng(3)
    stats = NormStats(method="zscore", mean=[0.0] * 3, std=[1.0] * 3, low=[20.0, -300.0, 1000.0], high=[200.0, 900.0, 5000.0])
    edges = bin_edges(stats)
    low, high = np.asarray(stats.low), np.asarray(stats.high)
    for dtype, lo, hi in ((np.uint8, 0, 256), (np.uint16, 0, 8000), (np.int16, -2000, 6000)):
        x = rng.integers(lo, hi, (3, 5000)).astype(dtype)
        total, outside, counts = window_summary(x, low, high, edges)
        f = x.astype(np.float64)
        np.testing.assert_array_equal(total, f.sum(1))
        np.testing.assert_array_equal(outside, ((f < low[:, None]) | (f > high[:, None])).sum(1))
        np.testing.assert_array_equal(counts, band_histograms(f, edges))
        assert counts.sum() == x.size and window_summary(x, low, high, None)[2] is None


def test_the_drift_figures_count_valid_pixels_only_whether_or_not_a_window_has_nodata(tmp_path):
    """A window of valid pixels is summarised as a view, one with nodata from its valid pixels: both give the mean
    of the valid pixels (a nodata fill counted as data would pull the mean down)."""
    rng = np.random.default_rng(5)
    stats = NormStats("meanstd", [0.0], [1.0], [0.0], [255.0])  # smd = the mean of the pixels read
    pixels = rng.integers(50, 200, (128, 128)).astype(np.uint8)
    for nodata_cols in (0, 40):
        path, _, _ = make_geotiff(tmp_path / f"s{nodata_cols}.tif", 128, 128, bands=1, nodata=0, seed=0)
        img = pixels.copy()
        img[:, :nodata_cols] = 0
        with rasterio.open(path, "r+") as ds:
            ds.write(img[None])
        report = input_drift(RasterScene(path), stats, window=64)
        assert report is not None
        np.testing.assert_allclose(report.smd[0], pixels[:, nodata_cols:].astype(np.float64).mean())
