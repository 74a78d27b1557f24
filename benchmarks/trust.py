"""Figures for maps users can trust, on a labelled tile with a bundle:

* expected calibration error on the tile with and without temperature scaling (the bundle's, or one
  fitted on ``--fit-image`` / ``--fit-mask``);
* IoU of class 1 with and without D4 test-time augmentation;
* AUROC of the confidence raster (max probability) for telling wrong pixels from right ones;
* the area of class 1 estimated from an N-point stratified sample (labels from the reference mask)
  vs the true area, and whether it falls inside the 95% interval (Olofsson et al. 2014).

Usage:
    python benchmarks/trust.py BUNDLE IMAGE.tif --mask MASK.tif [--n 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("image", type=Path)
    p.add_argument("--mask", type=Path, required=True)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-image", type=Path, help="bundles without a calibration: fit the temperature on this labelled image")
    p.add_argument("--fit-mask", type=Path)
    a = p.parse_args()

    import rasterio

    from terraseg.bundle import Bundle
    from terraseg.evaluation.area import estimate_area, sample_points
    from terraseg.infer.inputs import open_input
    from terraseg.infer.sliding import predictor_for
    from terraseg.prediction.outputs import predict_to_files

    b = Bundle.load(a.bundle)
    with rasterio.open(a.mask) as m:
        truth = m.read(1)
    out = Path(tempfile.mkdtemp(prefix="trust-"))
    import torch

    from terraseg.data.rasters import RasterScene
    from terraseg.training.calibrate import calibrate_on_scenes, expected_calibration_error

    if not b.manifest.calibration and a.fit_image:
        fit = RasterScene(a.fit_image, mask_path=a.fit_mask, ignore_index=b.manifest.ignore_index)
        b.manifest.calibration = calibrate_on_scenes(
            b.model, [fit], b.stats, b.manifest.input.predict_window, b.manifest.ignore_index
        )
    T = b.manifest.calibration.get("temperature", 1.0)
    scene = open_input(b, a.image)
    eces = {}
    for name, t in (("uncalibrated", 1.0), ("temperature", T)):
        b.manifest.calibration = {"temperature": t}
        ids, probs = predictor_for(b).predict_array(scene)
        ok = (ids >= 0) & (truth != b.manifest.ignore_index)
        eces[name] = expected_calibration_error(
            torch.from_numpy(probs[:, ok].T.copy()), torch.from_numpy(truth[ok].astype(np.int64))
        )
    print(
        f"temperature {T:.3f}: ECE on the tile {eces['uncalibrated']:.4f} uncalibrated -> {eces['temperature']:.4f}", flush=True
    )
    b.manifest.calibration = {"temperature": T}
    res = {}
    for tta in ("none", "d4"):
        pred = predictor_for(b, tta=tta)
        t0 = time.perf_counter()
        files = predict_to_files(
            pred, open_input(b, a.image), out / tta, b.class_names, [c.color for c in b.manifest.classes], uncertainty=True
        )
        dt = time.perf_counter() - t0
        with rasterio.open(files["prediction"]) as d, rasterio.open(files["confidence"]) as c:
            ids, conf = d.read(1), c.read(1)
        ok = ids != 255
        inter, union = np.logical_and(ids == 1, truth == 1)[ok].sum(), np.logical_or(ids == 1, truth == 1)[ok].sum()
        wrong = (ids != truth)[ok]
        # AUROC of (1 - confidence) as a detector of wrong pixels (Mann-Whitney U from ranks)
        score = -conf[ok]
        order = np.argsort(score, kind="mergesort")
        ranks = np.empty(len(score))
        ranks[order] = np.arange(1, len(score) + 1)
        n1, n0 = wrong.sum(), (~wrong).sum()
        auroc = (ranks[wrong].sum() - n1 * (n1 + 1) / 2) / max(n1 * n0, 1)
        res[tta] = (inter / max(union, 1), auroc, dt, files["prediction"])
        print(
            f"tta {tta}: IoU(class 1) {inter / max(union, 1):.4f}, wrong pixels {wrong.mean():.2%}, "
            f"AUROC of the confidence for wrong pixels {auroc:.3f}, {dt:.1f} s",
            flush=True,
        )
    # area from a stratified sample of the (no-TTA) map, labels from the reference mask
    pts = sample_points(res["none"][3], a.n, "proportional", min_per_class=max(50, a.n // 6), seed=a.seed)
    pts["reference"] = truth[pts["row"], pts["col"]].astype(int)
    pts = pts[pts["reference"] != 255]
    ref = out / "points.gpkg"
    pts.to_file(ref, driver="GPKG", layer="points")
    est, det = estimate_area(res["none"][3], ref, "reference")
    with rasterio.open(res["none"][3]) as d:
        px_ha = abs(d.transform.a * d.transform.e) / 1e4
    true_area = float((truth == 1).sum()) * px_ha
    mapped = float(det["mapped_pixels"][1]) * px_ha
    k = 1
    inside = abs(est.area[k] - true_area) <= est.area_ci[k]
    print(
        f"area of class 1 from {len(pts)} stratified points: {est.area[k]:.2f} +/- {est.area_ci[k]:.2f} {est.unit} (95%); "
        f"true {true_area:.2f}; mapped (pixel count) {mapped:.2f}; truth inside the interval: {inside}"
    )


if __name__ == "__main__":
    main()
