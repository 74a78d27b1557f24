"""Hyperspectral rasters at the speed of their bytes: one streamed pass, one figure, outputs together or not at all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from terraseg.config.prep import StatsConfig
from terraseg.prepare.stats import compute_statistics

ENV = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def cube(path: Path, bands: int = 224, size: int = 128, dtype: str = "int16", seed: int = 0) -> tuple[Path, np.ndarray]:
    """A tiled, compressed hyperspectral GeoTIFF (COG-like layout) with a smooth spectrum plus noise."""
    rng = np.random.default_rng(seed)
    spectrum = (1000 + 800 * np.sin(np.linspace(0, 3, bands)))[:, None, None]
    data = (spectrum + rng.normal(0, 50, (bands, size, size))).astype(dtype)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=bands,
        dtype=dtype,
        crs="EPSG:32633",
        transform=from_origin(400000, 5000000, 30, 30),
        tiled=True,
        blockxsize=64,
        blockysize=64,
        compress="deflate",
        interleave="pixel",
        photometric="MINISBLACK",
    ) as d:
        d.write(data)
    return path, data


def test_224_band_stats_are_exact_and_write_one_figure(tmp_path):
    path, data = cube(tmp_path / "enmap.tif", size=96)
    r = compute_statistics(StatsConfig(images=[str(path)], out_dir=str(tmp_path / "st"), block=48))
    assert sorted(p.name for p in (tmp_path / "st").iterdir()) == ["bands.png", "stats.json"]  # not 224 PNGs
    assert len(r.stats["bands"]) == 224
    for k in (0, 100, 223):
        x = data[k].astype(float).ravel()
        b = r.stats["bands"][k]
        assert b["mean"] == pytest.approx(x.mean()) and b["std"] == pytest.approx(x.std())
        assert (b["min"], b["max"]) == (x.min(), x.max())
        assert b["percentiles"]["50"] == pytest.approx(np.percentile(x, 50), abs=1.0)


def test_few_bands_get_small_multiples_and_floats_approximate_percentiles(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.normal(0.2, 0.05, (3, 64, 64)).astype("float32")
    with rasterio.open(tmp_path / "f.tif", "w", driver="GTiff", width=64, height=64, count=3, dtype="float32") as d:
        d.write(data)
    r = compute_statistics(StatsConfig(images=[str(tmp_path / "f.tif")], out_dir=str(tmp_path / "st"), bins=512))
    width = float(data[0].max() - data[0].min()) / 512
    assert r.stats["bands"][0]["percentiles"]["98"] == pytest.approx(np.percentile(data[0], 98), abs=2 * width)
    assert (tmp_path / "st" / "bands.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_during_stats_leaves_no_output_and_ends_the_run(tmp_path, sig):
    path, _ = cube(tmp_path / "big.tif", size=512, bands=224)
    out = tmp_path / "st"
    import psutil

    proc = subprocess.Popen(
        [sys.executable, "-m", "terraseg", "--quiet", "stats", str(path), "--out", str(out)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < 120:  # wait until the command reads the raster
        try:
            if any(f.path == str(path) for f in psutil.Process(proc.pid).open_files()):
                break
        except psutil.Error:
            pass
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(sig)
    try:
        text = proc.communicate(timeout=60)[0].decode()
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run went on after the stop signal")
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived on this machine")
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), text
    assert not out.exists() or not [p.name for p in out.iterdir() if not p.name.startswith(".")]
    assert not out.exists() or not list(out.iterdir()), "staging left behind"


def test_a_stop_swallowed_while_plotting_still_stops(tmp_path, monkeypatch):
    """matplotlib can swallow the exception a signal raises ("Exception ignored in ..."); the stop request still counts."""
    from terraseg import interrupt
    from terraseg.prepare import stats as stats_mod

    path, _ = cube(tmp_path / "c.tif", size=32, bands=20)
    real = stats_mod._bands_figure

    def swallowed(*a, **k):
        interrupt.request(signal.SIGTERM)  # what the CLI's handler records before its exception is swallowed
        return real(*a, **k)

    monkeypatch.setattr(stats_mod, "_bands_figure", swallowed)
    monkeypatch.setattr(interrupt, "_requested", None)
    with pytest.raises(KeyboardInterrupt):
        compute_statistics(StatsConfig(images=[str(path)], out_dir=str(tmp_path / "st")))
    monkeypatch.setattr(interrupt, "_requested", None)
    assert [p.name for p in (tmp_path / "st").iterdir()] == []
