"""The preprocessing contract: predict feeds the network exactly what training fed it."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_geotiff
from terraseg.data.datasets import make_sample, scene_statistics
from terraseg.data.normalize import NormStats, compute_stats, normalize
from terraseg.data.rasters import RasterScene
from terraseg.data.windows import grid_windows
from terraseg.errors import BundleError
from terraseg.infer.sliding import SlidingWindowPredictor


class RecordingBackend:
    """Returns uniform probabilities and records every batch it is given."""

    def __init__(self, k: int = 2) -> None:
        self.k = k
        self.batches: list[np.ndarray] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.copy())
        n, _, h, w = batch.shape
        return np.full((n, self.k, h, w), 1.0 / self.k, dtype=np.float32)


@pytest.mark.parametrize("dtype,nodata", [("uint8", None), ("uint16", 255), ("uint16", None), ("int16", -1)])
@pytest.mark.parametrize("method", ["meanstd", "percentile"])
def test_predict_preprocessing_is_bit_identical_to_training(tmp_path, dtype, nodata, method):
    path, _, _ = make_geotiff(tmp_path / "s.tif", 128, 192, bands=4, dtype=dtype, nodata=nodata, seed=3)
    scene = RasterScene(path, ignore_index=255)
    stats = scene_statistics([scene], method, (2, 98), 10_000, seed=0)
    window = 64
    train_view = [
        make_sample(scene, w.row, w.col, window, stats) for w in grid_windows(scene.height, scene.width, window)
    ]  # training path
    rec = RecordingBackend()
    SlidingWindowPredictor(rec, stats, 2, window=window, overlap=0.0, batch_size=3).predict(scene, lambda b: None)
    tiles = np.concatenate(rec.batches)
    assert len(tiles) == len(train_view) == (128 // 64) * (192 // 64)
    for i in range(len(train_view)):
        a = train_view[i]["image"].numpy()
        assert a.dtype == np.float32
        # bit-for-bit, not approximately
        assert a.tobytes() == tiles[i].tobytes(), f"tile {i} differs"


def test_normalize_meanstd_values_and_nodata():
    img = np.array([[[0, 10], [20, 255]]], dtype=np.uint8)
    stats = NormStats("meanstd", mean=[10.0], std=[10.0], low=[0.0], high=[20.0])
    valid = np.array([[True, True], [True, False]])
    out = normalize(img, stats, valid)
    np.testing.assert_array_equal(out, np.array([[[-1.0, 0.0], [1.0, 0.0]]], dtype=np.float32))


def test_normalize_percentile_clips_to_unit_range():
    img = np.array([[[0, 100, 200, 300]]], dtype=np.uint16)
    stats = NormStats("percentile", mean=[0.0], std=[1.0], low=[100.0], high=[200.0])
    np.testing.assert_allclose(normalize(img, stats)[0, 0], [0.0, 0.0, 1.0, 1.0])


def test_normalize_rejects_wrong_band_count():
    stats = NormStats("meanstd", mean=[0.0, 0.0], std=[1.0, 1.0], low=[0.0, 0.0], high=[1.0, 1.0])
    with pytest.raises(BundleError, match="3 bands"):
        normalize(np.zeros((3, 2, 2), np.uint8), stats)


def test_compute_stats_handles_constant_band():
    px = np.stack([np.full(100, 7.0), np.arange(100.0)])
    s = compute_stats(px)
    assert s.std[0] == 1.0 and s.mean[0] == 7.0
    assert s.high[0] > s.low[0]
    assert abs(s.mean[1] - 49.5) < 1e-9
