"""Pixel baselines: training time and prediction throughput on a generated 4-band scene.

Generates (seeded, block by block) a ``--size`` x ``--size`` 4-band uint16 GeoTIFF (blue, green, red,
nir) with smooth "water" regions, and a labelled 2048 x 2048 training scene of the same kind. For
each estimator, in a fresh process: training time (class-balanced sampling + fit, with NDVI and
NDWI features) and prediction of the whole large scene through ``terraseg.prediction.run.predict``
(sliding windows, streamed GeoTIFF output): megapixels per second and peak RSS.

Usage::

    .venv/bin/python benchmarks/pixel_bench.py [--size 8192] [--arch random_forest gradient_boosting logistic_regression]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

BANDS = ["blue", "green", "red", "nir"]


def water(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Smooth class field: 1 where a sum of sines is positive."""
    return ((np.sin(rows / 97.0) + np.cos(cols / 131.0) + 0.5 * np.sin((rows + cols) / 53.0)) > 0.6).astype(np.uint8)


def write_scene(path: Path, size: int, mask_path: Path | None = None, block: int = 1024, seed: int = 0) -> None:
    """The synthetic scene (and optionally its mask), written one strip of ``block`` rows at a time."""
    rng = np.random.default_rng(seed)
    prof = dict(
        driver="GTiff",
        width=size,
        height=size,
        crs="EPSG:32633",
        transform=from_origin(400000, 6000000, 10, 10),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        BIGTIFF="IF_SAFER",
    )
    with rasterio.open(path, "w", count=4, dtype="uint16", **prof) as dst:
        msk = rasterio.open(mask_path, "w", count=1, dtype="uint8", **prof) if mask_path else None
        for r0 in range(0, size, block):
            h = min(block, size - r0)
            rr, cc = np.mgrid[r0 : r0 + h, 0:size]
            t = water(rr, cc)
            img = rng.normal(1000, 250, (4, h, size)).astype(np.float32)
            img[1] += np.where(t == 1, 600, -300)
            img[3] += np.where(t == 1, -300, 700)
            img *= rng.uniform(0.5, 2.0, (h, size)).astype(np.float32)
            dst.write(np.clip(img, 1, 20000).astype(np.uint16), window=Window(0, r0, size, h))
            if msk:
                msk.write(t[None], window=Window(0, r0, size, h))
        if msk:
            msk.close()


def one(arch: str, train_img: Path, train_mask: Path, scene: Path, work: Path) -> dict:
    """Train ``arch`` and predict ``scene`` in this process; figures as a dict."""
    from terraseg import predict
    from terraseg.config import ExperimentConfig
    from terraseg.training.pixel import train_pixel

    cfg = ExperimentConfig.model_validate(
        {
            "name": f"bench-{arch}",
            "classes": [{"name": "land"}, {"name": "water"}],
            "data": {
                "train": [{"kind": "scene", "image": str(train_img), "mask": str(train_mask)}],
                "val_fraction": 0.0,
                "band_names": BANDS,
            },
            "model": {"arch": arch},
            "baseline": {"indices": ["ndvi", "ndwi"], "samples_per_class": 20000, "n_estimators": 100},
            "tracking": {"enabled": False},
            "output_dir": str(work / arch),
        }
    )
    t0 = time.perf_counter()
    res = train_pixel(cfg)
    t_train = time.perf_counter() - t0
    rss_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t1 = time.perf_counter()
    out = predict(res.bundle_path, [scene], work / f"{arch}-pred")
    t_pred = time.perf_counter() - t1
    assert not out.failures, out.failures
    with rasterio.open(scene) as ds:
        mp = ds.width * ds.height / 1e6
        with rasterio.open(next(iter(out.outputs.values()))["prediction"]) as pred:
            w = Window(0, 0, min(2048, ds.width), min(2048, ds.height))
            rr, cc = np.mgrid[0 : int(w.height), 0 : int(w.width)]
            agree = float((pred.read(1, window=w) == water(rr, cc)).mean())
    from terraseg.bundle import Bundle

    fit_s = Bundle.load(res.bundle_path).manifest.training["fit_seconds"]
    return {
        "arch": arch,
        "train_s": round(t_train, 1),
        "fit_s": fit_s,
        "predict_s": round(t_pred, 1),
        "mp_per_s": round(mp / t_pred, 2),
        "peak_rss_mb_train": round(rss_train),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "pixel_accuracy_2048_corner": round(agree, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--arch", nargs="+", default=["random_forest", "gradient_boosting", "logistic_regression"])
    ap.add_argument("--work", type=Path, default=None, help="folder for the generated rasters (default: a temporary folder)")
    ap.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], *map(Path, a.one[1:]))))
        return
    work = a.work or Path(tempfile.mkdtemp(prefix="pixel-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    scene, timg, tmask = work / f"scene{a.size}.tif", work / "train.tif", work / "train_mask.tif"
    t0 = time.perf_counter()
    if not scene.exists():
        write_scene(scene, a.size, seed=1)
    if not timg.exists():
        write_scene(timg, 2048, tmask, seed=2)
    print(
        f"scene {a.size}x{a.size}x4 uint16 ({scene.stat().st_size / 1e6:.0f} MB) ready in {time.perf_counter() - t0:.0f} s; "
        "training scene 2048x2048, 20,000 pixels per class, features: 4 bands + NDVI + NDWI"
    )
    print("arch                 train_s  fit_s  predict_s  MP/s  peak_RSS_MB  agreement")
    for arch in a.arch:
        r = subprocess.run(
            [sys.executable, __file__, "--one", arch, str(timg), str(tmask), str(scene), str(work)],
            capture_output=True,
            text=True,
        )
        if r.returncode:
            print(f"{arch}: failed\n{r.stderr[-2000:]}")
            continue
        d = json.loads(r.stdout.strip().splitlines()[-1])
        print(
            f"{arch:20s} {d['train_s']:7.1f} {d['fit_s']:6.1f} {d['predict_s']:10.1f} {d['mp_per_s']:5.2f} "
            f"{d['peak_rss_mb']:12d} {d['pixel_accuracy_2048_corner']:10.4f}"
        )


if __name__ == "__main__":
    main()
