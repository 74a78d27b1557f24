"""Sliding-window prediction: coverage, blending, streaming order, georeferenced outputs."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from conftest import make_geotiff
from terraseg.data.normalize import NormStats
from terraseg.data.rasters import RasterScene
from terraseg.infer.sliding import SlidingWindowPredictor, hann_weights
from terraseg.prediction.outputs import predict_to_files

IDENTITY = NormStats("none")


def threshold_backend(batch: np.ndarray) -> np.ndarray:
    """A position-independent 'model': class 1 where band 0 > 100 (probability 0.9)."""
    p1 = np.where(batch[:, 0] > 100, 0.9, 0.1).astype(np.float32)
    return np.stack([1 - p1, p1], axis=1)


@pytest.mark.parametrize("k", [1, 2, 5, 17])
def test_class_argmax_equals_torch_argmax_including_ties(k):
    from terraseg.infer.sliding import class_argmax

    g = torch.Generator().manual_seed(k)
    x = torch.randint(0, 4, (k, 33, 47), generator=g).float()  # many ties: the first maximum wins, as argmax
    assert torch.equal(class_argmax(x), x.argmax(0))
    y = torch.rand(3, k, 8, 9, generator=g)
    assert torch.equal(class_argmax(y, dim=1), y.argmax(1))


def test_hann_weights_positive_and_peaked():
    w = hann_weights(64, 64)
    assert w.min() > 0 and w[32, 32] == w.max()
    assert w[0, 0] < 0.01


@pytest.mark.parametrize("shape", [(20, 30), (64, 64), (150, 97), (300, 260)])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_blended_prediction_equals_per_pixel_truth(tmp_path, shape, overlap):
    path, img, truth = make_geotiff(tmp_path / "s.tif", *shape, seed=4)
    scene = RasterScene(path)
    pred = SlidingWindowPredictor(threshold_backend, IDENTITY, 2, window=64, overlap=overlap, batch_size=2)
    rows: list[tuple[int, int]] = []
    ids = np.full(shape, -2)

    def sink(b):
        rows.append((b.row, b.class_ids.shape[0]))
        ids[b.row : b.row + b.class_ids.shape[0]] = b.class_ids
        np.testing.assert_allclose(b.probs.sum(axis=0), 1.0, rtol=1e-5)

    pred.predict(scene, sink)
    # rows arrive in order, each exactly once
    starts = [r for r, _ in rows]
    assert starts == sorted(starts) and starts[0] == 0
    assert sum(n for _, n in rows) == shape[0]
    np.testing.assert_array_equal(ids, (img[0] > 100).astype(np.int64))


@pytest.mark.parametrize("readers", [2, 5])
def test_parallel_readers_give_the_same_strips_in_order(tmp_path, readers):
    """Several reader threads (each with its own GDAL handle) read ahead; blocks still arrive once, in order, identical."""
    path, img, _ = make_geotiff(tmp_path / "s.tif", 300, 140, seed=9, nodata=0)
    results = []
    for n in (1, readers):
        scene = RasterScene(path, cache=False)
        pred = SlidingWindowPredictor(threshold_backend, IDENTITY, 2, window=64, overlap=0.25, batch_size=3, readers=n)
        blocks = []
        pred.predict(scene, lambda b: blocks.append((b.row, b.class_ids.copy(), b.probs.copy())))
        results.append(blocks)
    one, many = results
    assert [r for r, _, _ in many] == [r for r, _, _ in one] and len(one) > 4
    for (_, a, pa), (_, b, pb) in zip(one, many):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(pa, pb)
    ids = np.concatenate([b for _, b, _ in many])
    valid = RasterScene(path).read(0, 0, 300, 140, labels=False).valid
    assert 0 < valid.sum() < valid.size
    np.testing.assert_array_equal(ids[valid], (img[0][valid] > 100).astype(np.int32))
    assert (ids[~valid] == -1).all()


def test_geotiff_output_keeps_grid_and_nodata(tmp_path):
    path, img, _ = make_geotiff(tmp_path / "in.tif", 90, 110, dtype="uint16", nodata=0, seed=5, crs="EPSG:26986")
    scene = RasterScene(path)
    pred = SlidingWindowPredictor(threshold_backend, IDENTITY, 2, window=64, overlap=0.25)
    outs = predict_to_files(
        pred, scene, tmp_path / "out", ["background", "object"], ["#000000", "#ff0000"], probabilities=True, overlay=True
    )
    with rasterio.open(path) as src, rasterio.open(outs["prediction"]) as dst, rasterio.open(outs["probabilities"]) as pr:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert (dst.width, dst.height) == (src.width, src.height)
        assert pr.count == 2 and pr.transform == src.transform
        ids = dst.read(1)
        assert dst.nodata == 255
        assert (ids[:4, :4] == 255).all()  # nodata corner stays nodata
        np.testing.assert_array_equal(ids[10:, 10:], (img[0, 10:, 10:] > 100).astype(np.uint8))
    assert (tmp_path / "out" / "in_overlay.png").is_file()
    assert not list((tmp_path / "out").glob(".*part*"))  # no temp files left
    # the class names travel with the class raster: vectorize names the regions without being told
    import geopandas as gpd

    from terraseg.config.prep import VectorizeConfig
    from terraseg.prediction.vectorize import vectorize

    gj = vectorize(VectorizeConfig(raster=outs["prediction"], out=str(tmp_path / "r.geojson")))
    assert set(gpd.read_file(gj)["class_name"]) == {"object"}


def test_band_count_mismatch_is_a_clear_error(tmp_path):
    from terraseg.errors import BundleError

    path, _, _ = make_geotiff(tmp_path / "four.tif", 40, 40, bands=4)
    stats = NormStats("meanstd", mean=[0.0] * 3, std=[1.0] * 3, low=[0.0] * 3, high=[1.0] * 3)
    pred = SlidingWindowPredictor(threshold_backend, stats, 2, window=64)
    with pytest.raises(BundleError, match="4 bands but the model expects 3"):
        pred.predict(RasterScene(path), lambda b: None)


def test_batching_backend_shares_forward_passes_between_callers():
    import threading

    import torch

    from terraseg.infer.backends import ArrayBackend, BatchingBackend

    calls = []

    def run(batch):
        calls.append(len(batch))
        return threshold_backend(batch)

    shared = BatchingBackend(ArrayBackend(run), max_batch=16, wait_ms=200)
    rng = np.random.default_rng(0)
    inputs = [torch.from_numpy(rng.integers(0, 200, (2, 3, 32, 32)).astype(np.float32)) for _ in range(6)]
    results = [None] * 6

    def caller(i):
        results[i] = shared.probabilities(inputs[i])

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sum(calls) == 12 and len(calls) < 6  # 6 callers' windows in fewer forward passes
    for x, r in zip(inputs, results):  # each caller gets its own windows' probabilities
        np.testing.assert_array_equal(r.numpy(), threshold_backend(x.numpy()))
    with pytest.raises(ValueError):  # errors reach the waiting caller
        BatchingBackend(ArrayBackend(lambda b: (_ for _ in ()).throw(ValueError("boom"))), wait_ms=1).probabilities(inputs[0])
    import time

    alone = BatchingBackend(ArrayBackend(run), max_batch=16, wait_ms=3000, in_flight=lambda: 1)
    t0 = time.monotonic()
    alone.probabilities(inputs[0])
    assert time.monotonic() - t0 < 1.5  # the only request in flight does not wait for company


def test_batching_backend_caps_a_pass_at_the_measured_pixels():
    """With max_pixels, a shared pass holds at most that many pixels (one caller's windows always run whole)."""
    import threading

    import torch

    from terraseg.infer.backends import ArrayBackend, BatchingBackend, best_batch_pixels

    calls = []

    def run(batch):
        calls.append(len(batch))
        return threshold_backend(batch)

    shared = BatchingBackend(ArrayBackend(run), max_batch=16, wait_ms=200, max_pixels=2 * 32 * 32)
    inputs = [torch.full((1, 3, 32, 32), float(i)) for i in range(6)]
    threads = [threading.Thread(target=shared.probabilities, args=(x,)) for x in inputs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sum(calls) == 6 and max(calls) == 2  # six windows, never more than two (2 x 32 x 32 pixels) in a pass
    calls.clear()
    big = BatchingBackend(ArrayBackend(run), max_batch=16, wait_ms=1, max_pixels=100)
    big.probabilities(torch.zeros(3, 3, 32, 32))
    assert calls == [3]  # a caller's windows over the cap still run, in one pass

    class Timed:  # 1 window: 10 ms, 2: 12 ms, 4: 40 ms -> 2 windows give the most pixels per second
        device = torch.device("cpu")

        def probabilities(self, x):
            import time

            time.sleep({1: 0.010, 2: 0.012, 4: 0.040}[len(x)])
            return torch.zeros(len(x), 2, *x.shape[2:])

    cap, seconds = best_batch_pixels(Timed(), 3, 16, max_batch=8)  # 4 windows run under 0.9 of the best rate: 8 is never tried
    assert sorted(seconds) == [1, 2, 4] and cap == 2 * 16 * 16
    assert sorted(best_batch_pixels(Timed(), 3, 16, max_batch=4, stop_below=None)[1]) == [1, 2, 4]
    Timed.probabilities = lambda self, x: (__import__("time").sleep(0.004 * len(x) ** 0.5), torch.zeros(1))[1]
    assert best_batch_pixels(Timed(), 3, 16, max_batch=4)[0] is None  # the largest batch fastest: no cap


def test_uncertainty_raster_and_tta(tmp_path):
    """--uncertainty writes max probability, margin and normalised entropy; D4 TTA averages 8 views mapped back."""
    from terraseg.infer.backends import ArrayBackend, TTABackend

    path, img, _ = make_geotiff(tmp_path / "in.tif", 90, 110, nodata=0, seed=5, crs="EPSG:26986")
    pred = SlidingWindowPredictor(threshold_backend, IDENTITY, 2, window=64, overlap=0.25)
    outs = predict_to_files(pred, RasterScene(path), tmp_path / "o", ["bg", "obj"], ["#000000", "#ff0000"], uncertainty=True)
    with rasterio.open(outs["confidence"]) as c:
        assert c.count == 3 and c.descriptions == ("max_probability", "margin", "normalized_entropy") and c.dtypes[0] == "float32"
        conf = c.read()
    ok = ~np.isnan(conf[0])
    assert np.isnan(conf[:, :4, :4]).all()  # nodata corner
    np.testing.assert_allclose(conf[0][ok], 0.9, atol=1e-5)
    np.testing.assert_allclose(conf[1][ok], 0.8, atol=1e-5)
    h = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1)) / np.log(2)
    np.testing.assert_allclose(conf[2][ok], h, atol=1e-5)

    calls = []

    def ramp(batch: np.ndarray) -> np.ndarray:  # not equivariant: class 1 grows to the right
        calls.append(1)
        w = batch.shape[-1]
        p1 = np.broadcast_to(np.linspace(0, 1, w, dtype=np.float32), batch[:, 0].shape)
        return np.stack([1 - p1, p1], axis=1)

    x = torch.rand(2, 3, 32, 32)
    out = TTABackend(ArrayBackend(ramp), "d4").probabilities(x)
    assert len(calls) == 8
    np.testing.assert_allclose(out[0, 1].numpy(), 0.5, atol=1e-6)  # the eight views of a ramp average to a constant
    flips = TTABackend(ArrayBackend(threshold_backend), "flips").probabilities(x * 255)
    np.testing.assert_allclose(flips.numpy(), threshold_backend((x * 255).numpy()), atol=1e-6)  # equivariant: unchanged
