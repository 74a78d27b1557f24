"""Many small images: batched prediction (several same-size images per forward) vs one image at a time.

Predicts the magnetic-tile defect photos (``magnetic-tiles/MT_*/Imgs/*.jpg``, grey, about 200-500 px)
with ``terraseg.prediction.run.predict`` twice: all files in one call (images that are one window of the
same size share forward passes, ``--batch-size`` at a time) and one call per file (one forward each).
Prints images/s for both and checks that the class ids agree.

Usage:
    python benchmarks/small_images.py [--bundle B] [--folders MT_Blowhole MT_Crack] [--batch-size 8]

Without --bundle, a 1-band U-Net/ResNet18 bundle with random weights is used (speed does not depend
on the weights).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from terraseg import predict
from terraseg.devices import cpu_model
from terraseg.settings import data_root


def random_bundle(path: Path) -> Path:
    import torch

    from terraseg.bundle import Bundle, BundleManifest, InputSpec
    from terraseg.config import ClassSpec, ModelConfig
    from terraseg.data.normalize import NormStats
    from terraseg.models.factory import build_model

    torch.manual_seed(0)
    mc = ModelConfig(arch="unet", encoder="resnet18")
    m = BundleManifest(
        name="small",
        model=mc,
        classes=[ClassSpec(name="background"), ClassSpec(name="defect")],
        input=InputSpec(
            bands=1,
            dtype="uint8",
            normalization=NormStats("meanstd", [90.0], [40.0], [0.0], [255.0]),
            train_window=256,
            predict_window=256,
        ),
    )
    return Bundle(m, build_model(mc, 1, 2)).save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path)
    p.add_argument("--folders", nargs="+", default=["MT_Blowhole", "MT_Crack", "MT_Fray"])
    p.add_argument("--batch-size", type=int, default=8)
    a = p.parse_args()
    files = sorted(f for d in a.folders for f in (data_root() / "magnetic-tiles" / d / "Imgs").glob("*.jpg"))
    if not files:
        raise SystemExit("no magnetic-tile images under the data root")
    sizes = {Image.open(f).size for f in files}
    with tempfile.TemporaryDirectory() as tmp:
        from terraseg.bundle import Bundle

        bundle = Bundle.load(a.bundle or random_bundle(Path(tmp) / "small.terraseg"))  # loaded once for both runs
        opts = dict(batch_size=a.batch_size)
        predict(bundle, files[:2], Path(tmp) / "warm", **opts)  # warm-up, runtime ranking
        t0 = time.perf_counter()
        together = predict(bundle, files, Path(tmp) / "batched", **opts)
        t_batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        alone = {}
        for f in files:
            alone |= predict(bundle, [f], Path(tmp) / "single", **opts).outputs
        t_single = time.perf_counter() - t0
        differ = sum(
            int(
                (
                    np.asarray(Image.open(together.outputs[str(f)]["prediction"]))
                    != np.asarray(Image.open(alone[str(f)]["prediction"]))
                ).sum()
            )
            for f in files
        )
        pixels = sum(w * h for w, h in (Image.open(f).size for f in files))
    print(
        f"{len(files)} images in {len(sizes)} sizes from {', '.join(a.folders)}; cpu {cpu_model()} x{os.cpu_count()}; "
        f"batch {a.batch_size}"
    )
    print(f"one call, same-size images batched: {len(files) / t_batched:.1f} images/s ({t_batched:.1f} s)")
    print(
        f"one call per image:                 {len(files) / t_single:.1f} images/s ({t_single:.1f} s); "
        f"speed-up x{t_single / t_batched:.2f}; pixels that differ: {differ} of {pixels}"
    )


if __name__ == "__main__":
    main()
