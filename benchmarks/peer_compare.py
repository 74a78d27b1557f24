"""terraseg's default prediction against TorchGeo's and Raster Vision's inference patterns, same network, same scene.

A generated ``--size``^2 3-band uint8 GeoTIFF is predicted with one U-Net/ResNet18 (random weights;
or ``--bundle``), windows of 512 at a stride of 384 (overlap 0.25), batches of 4, in fresh child
processes:

* ``terraseg``: ``terraseg predict`` as a user runs it (defaults: the backend and precision
  ``terraseg.infer.runtime`` ranks fastest on this machine, Hann blending, DEFLATE GeoTIFF); and
  again forced to PyTorch fp32 NCHW, the numerics TorchGeo uses;
* ``torchgeo``: TorchGeo's documented inference pattern: ``RasterDataset`` + ``GridGeoSampler`` +
  ``DataLoader(collate_fn=stack_samples)``, the user's normalisation and forward in fp32, each
  window's argmax written into a scene-sized array at the pixel offsets of its bounds (later windows
  overwrite earlier ones), then one GeoTIFF written with rasterio (DEFLATE);
* ``rastervision``: Raster Vision 0.31's documented pattern: ``SemanticSegmentationSlidingWindowGeoDataset``
  (the same normalisation as an albumentations ``Normalize``), ``Learner.predict_dataset`` (fp32),
  ``SemanticSegmentationLabels.from_predictions(smooth=True)`` (window scores averaged) and
  ``labels.save`` (class raster only).

Printed: seconds and megapixels per second of each, the speed-up of terraseg over TorchGeo, and the
share of pixels whose class agrees (blending and overwriting differ at window borders only).
Each peer and the packages it needs beyond terraseg's are installed with ``pip install --target --no-deps``
into ``--packages``/<peer> (default ``/tmp/terraseg-peers``) on first use, so the project's venv is untouched.

Usage:
    python benchmarks/peer_compare.py [--size 4096] [--bundle B] [--packages DIR] [--peers torchgeo,rastervision]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PEERS = {
    "torchgeo": [
        "torchgeo==0.8.1",
        "kornia",
        "kornia-rs",
        "rtree",
        "einops",
        "lightly",
        "jsonargparse[signatures]",
        "docstring-parser",
        "typeshed-client",
        "hydra-core",
        "omegaconf",
        "antlr4-python3-runtime",
        "aenum",
    ],
    # Raster Vision 0.31.1 and what it imports beyond terraseg's environment (albumentations 2.0.8 wants albucore 0.0.24)
    "rastervision": [
        "rastervision_core==0.31.1",
        "rastervision_pytorch_learner==0.31.1",
        "rastervision_pipeline==0.31.1",
        "everett",
        "configobj",
        "stackstac",
        "triangle",
        "humanize",
        "albumentations==2.0.8",
        "albucore==0.0.24",
        "opencv-python-headless<4.13",
        "pycocotools",
        "xarray",
        "scikit-image",
        "lazy_loader",
        "imageio",
        "tifffile",
        "pystac==1.14.*",
        "dask",
        "toolz",
        "stringzilla",
        "simsimd",
        "boto3",
        "botocore",
        "s3transfer",
        "jmespath",
        "tensorboard",
        "tensorboard-data-server",
        "markdown",
        "absl-py",
    ],
}


def torchgeo_child(scene: str, bundle: str, out: str) -> None:
    """TorchGeo's inference pattern (docs: 'Inference' / GridGeoSampler examples), timed end to end."""
    import numpy as np
    import rasterio
    import torch
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler

    from terraseg.bundle import Bundle

    torch.set_num_threads(os.cpu_count() or 1)
    b = Bundle.load(bundle)
    model = b.model.eval()
    mean = torch.tensor(b.stats.mean, dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(b.stats.std, dtype=torch.float32)[None, :, None, None]

    class Scene(RasterDataset):
        filename_glob = Path(scene).name
        is_image = True

    t0 = time.perf_counter()
    ds = Scene(paths=str(Path(scene).parent))
    sampler = GridGeoSampler(ds, size=512, stride=384)
    loader = DataLoader(ds, sampler=sampler, batch_size=4, collate_fn=stack_samples, num_workers=0)
    with rasterio.open(scene) as src:
        profile, height, width, left, top, res = src.profile, src.height, src.width, src.bounds.left, src.bounds.top, src.res[0]
    pred = np.zeros((height, width), np.uint8)
    with torch.inference_mode():
        for batch in loader:
            x = (batch["image"].float() - mean) / std
            logits = model(x)
            ids = (logits[:, 0] > 0).to(torch.uint8) if logits.shape[1] == 1 else logits.argmax(1).to(torch.uint8)
            for k, bounds in enumerate(batch["bounds"]):
                xs, ys = bounds[0], bounds[1]
                # TorchGeo 0.8's grid runs past the scene's edges (padded reads): clip the window to the scene
                col = int(round((min(xs.start, xs.stop) - left) / res))
                row = int(round((top - max(ys.start, ys.stop)) / res))
                r0, c0 = max(row, 0), max(col, 0)
                r1, c1 = min(row + 512, height), min(col + 512, width)
                if r1 > r0 and c1 > c0:
                    pred[r0:r1, c0:c1] = ids[k, r0 - row : r1 - row, c0 - col : c1 - col].numpy()
    profile.update(count=1, dtype="uint8", compress="deflate", nodata=None)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(pred[None])
    print(json.dumps({"seconds": time.perf_counter() - t0}))


def rastervision_child(scene: str, bundle: str, out: str) -> None:
    """Raster Vision 0.31's inference pattern (docs: 'Prediction and evaluation'), timed end to end."""
    import albumentations as A
    import torch
    from rastervision.core.data import ClassConfig, SemanticSegmentationLabels
    from rastervision.pytorch_learner import (
        SemanticSegmentationGeoDataConfig,
        SemanticSegmentationLearner,
        SemanticSegmentationLearnerConfig,
        SemanticSegmentationModelConfig,
        SemanticSegmentationSlidingWindowGeoDataset,
        SolverConfig,
    )

    from terraseg.bundle import Bundle

    torch.set_num_threads(os.cpu_count() or 1)
    b = Bundle.load(bundle)
    names = [c.name for c in b.manifest.classes]
    cc = ClassConfig(names=names, null_class=names[0])
    t0 = time.perf_counter()
    norm = A.Normalize(mean=[m / 255 for m in b.stats.mean], std=[s / 255 for s in b.stats.std], max_pixel_value=255.0)
    ds = SemanticSegmentationSlidingWindowGeoDataset.from_uris(
        class_config=cc, image_uri=scene, size=512, stride=384, transform=norm, normalize=False
    )
    cfg = SemanticSegmentationLearnerConfig(
        data=SemanticSegmentationGeoDataConfig(class_config=cc, num_workers=0),
        solver=SolverConfig(batch_sz=4),
        model=SemanticSegmentationModelConfig(),
    )

    class TwoChannel(torch.nn.Module):  # RV takes a softmax over K channels: a binary 1-logit net becomes [0, z]
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.net(x)
            return torch.cat([torch.zeros_like(z), z], 1) if z.shape[1] == 1 else z

    learner = SemanticSegmentationLearner(cfg=cfg, model=TwoChannel(b.model).eval(), training=False)
    preds = learner.predict_dataset(ds, raw_out=True, numpy_out=True, progress_bar=False)
    labels = SemanticSegmentationLabels.from_predictions(
        ds.windows, preds, smooth=True, extent=ds.scene.extent, num_classes=len(cc)
    )
    labels.save(uri=out, crs_transformer=ds.scene.raster_source.crs_transformer, class_config=cc, smooth_output=False)
    print(json.dumps({"seconds": time.perf_counter() - t0}))


def terraseg_child(scene: str, bundle: str, out: str, fp32: bool) -> None:
    """``terraseg predict`` through its Python API (the CLI builds the same config), timed end to end."""
    from terraseg import predict

    opts = {"backend": "torch", "precision": "32", "channels_last": False} if fp32 else {}
    t0 = time.perf_counter()
    res = predict(bundle, [scene], out, **opts)
    assert not res.failures, res.failures
    print(json.dumps({"seconds": time.perf_counter() - t0}))


def run_child(args: list[str], env: dict | None = None) -> float:
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env or os.environ.copy())
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])["seconds"]


def agreement(a: Path, b: Path) -> float:
    import rasterio

    with rasterio.open(a) as x, rasterio.open(b) as y:
        return float((x.read(1) == y.read(1)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--packages", type=Path, default=Path("/tmp/terraseg-peers"))
    ap.add_argument("--peers", default="torchgeo,rastervision", help="comma-separated: torchgeo, rastervision")
    ap.add_argument("--child", choices=["torchgeo", "rastervision", "terraseg", "terraseg-fp32"])
    ap.add_argument("--scene")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child == "torchgeo":
        return torchgeo_child(args.scene, str(args.bundle), args.out)
    if args.child == "rastervision":
        return rastervision_child(args.scene, str(args.bundle), args.out)
    if args.child:
        return terraseg_child(args.scene, str(args.bundle), args.out, args.child == "terraseg-fp32")

    from predict_throughput import demo_bundle, make_scene

    peers = [p for p in args.peers.split(",") if p]
    for peer in peers:
        where = args.packages / peer
        if not (where / peer).exists():
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "--target", str(where), "--no-deps", *PEERS[peer]], check=True
            )
    work = Path(tempfile.mkdtemp(prefix="terraseg-peers-"))
    scene = work / "scenes" / "scene.tif"
    scene.parent.mkdir()
    make_scene(scene, args.size)
    bundle = args.bundle or demo_bundle(work / "bench.terraseg")
    mp = args.size**2 / 1e6
    rows, classes = {}, {}
    for name in ("terraseg", "terraseg-fp32", *peers):
        out = work / name
        out.mkdir()
        target = str(out / "scene.tif") if name == "torchgeo" else str(out)
        env = None
        if name in PEERS:
            path = os.pathsep.join([str(args.packages / name), os.environ.get("PYTHONPATH", "")])
            env = os.environ | {"PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}
        secs = run_child(["--child", name, "--scene", str(scene), "--bundle", str(bundle), "--out", target], env)
        rows[name] = secs
        classes[name] = out / ("labels.tif" if name == "rastervision" else "scene.tif")
        print(json.dumps({"what": name, "seconds": round(secs, 2), "mpx_per_s": round(mp / secs, 3)}), flush=True)
    import torch

    summary = {"size": args.size, "cpu_cores": os.cpu_count(), "torch": torch.__version__}
    for peer in peers:
        summary[f"terraseg_default_vs_{peer}"] = round(rows[peer] / rows["terraseg"], 2)
        summary[f"terraseg_fp32_vs_{peer}"] = round(rows[peer] / rows["terraseg-fp32"], 2)
        summary[f"class_agreement_default_vs_{peer}"] = round(agreement(classes["terraseg"], classes[peer]), 4)
        summary[f"class_agreement_fp32_vs_{peer}"] = round(agreement(classes["terraseg-fp32"], classes[peer]), 4)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
