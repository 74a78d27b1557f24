"""How many pixels change class between float32 and a faster precision, on a real image.

Predicts one image with a bundle twice on the same device (the CLI's defaults otherwise): float32
(NCHW) and ``--precision`` (bf16 autocast + channels_last by default), and prints the pixels whose
class differs (count and share) and, with ``--mask``, the IoU of class 1 for both.

Usage:
    python benchmarks/precision_diff.py BUNDLE IMAGE [--mask MASK] [--device cuda] [--precision bf16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("image", type=Path)
    p.add_argument("--mask", type=Path, default=None, help="mask raster of class ids on the image's grid")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="bf16")
    a = p.parse_args()

    import rasterio

    from terraseg.bundle import Bundle
    from terraseg.infer.inputs import open_input
    from terraseg.infer.sliding import predictor_for

    b = Bundle.load(a.bundle)
    scene = open_input(b, a.image)
    ids = {}
    for prec, cl in (("32", False), (a.precision, True)):
        pred = predictor_for(b, device=a.device, precision=prec, channels_last=cl, backend="torch")
        pred.predict_array(scene)  # warm-up
        t0 = time.perf_counter()
        ids[prec] = pred.predict_array(scene)[0]
        print(f"{prec:>4} {'NHWC' if cl else 'NCHW'} on {pred.device}: {time.perf_counter() - t0:.3f} s", flush=True)
    x, y = ids["32"], ids[a.precision]
    n = int((x != y).sum())
    print(f"{a.image.name}: {n} of {x.size} pixels change class with {a.precision} ({n / x.size:.4%})")
    if a.mask:
        with rasterio.open(a.mask) as m:
            truth = m.read(1)
        for prec, v in ids.items():
            inter, union = np.logical_and(v == 1, truth == 1).sum(), np.logical_or(v == 1, truth == 1).sum()
            print(f"  IoU (class 1) {prec}: {inter / max(union, 1):.4f}")


if __name__ == "__main__":
    main()
