"""terraseg's default prediction against TorchGeo's sampler + user-code stitching, same network, same scene.

A generated ``--size``^2 3-band uint8 GeoTIFF is predicted with one U-Net/ResNet18 (random weights;
or ``--bundle``), windows of 512 at a stride of 384 (overlap 0.25), batches of 4, in fresh child
processes:

* ``terraseg``: ``terraseg predict`` as a user runs it (defaults: the backend and precision
  ``terraseg.predict.runtime`` ranks fastest on this machine, Hann blending, DEFLATE GeoTIFF); and
  again forced to PyTorch fp32 NCHW, the numerics TorchGeo uses;
* ``torchgeo``: TorchGeo's documented inference pattern: ``RasterDataset`` + ``GridGeoSampler`` +
  ``DataLoader(collate_fn=stack_samples)``, the user's normalisation and forward in fp32, each
  window's argmax written into a scene-sized array at the pixel offsets of its bounds (later windows
  overwrite earlier ones), then one GeoTIFF written with rasterio (DEFLATE).

Printed: seconds and megapixels per second of each, the speed-up of terraseg over TorchGeo, and the
share of pixels whose class agrees (blending and overwriting differ at window borders only).
TorchGeo and the few packages it needs beyond terraseg's are installed with ``pip install --target``
into ``--packages`` (default ``/tmp/terraseg-peers``) on first use, so the project's venv is untouched.

Usage:
    python benchmarks/peer_compare.py [--size 4096] [--bundle B] [--packages DIR]
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

PEERS = ["torchgeo==0.8.1", "kornia", "kornia-rs", "rtree", "einops", "lightly", "jsonargparse[signatures]", "docstring-parser",
         "typeshed-client", "hydra-core", "omegaconf", "antlr4-python3-runtime", "aenum"]


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
                    pred[r0:r1, c0:c1] = ids[k, r0 - row:r1 - row, c0 - col:c1 - col].numpy()
    profile.update(count=1, dtype="uint8", compress="deflate", nodata=None)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(pred[None])
    print(json.dumps({"seconds": time.perf_counter() - t0}))


def terraseg_child(scene: str, bundle: str, out: str, fp32: bool) -> None:
    """``terraseg predict`` through its Python API (the CLI builds the same config), timed end to end."""
    from terraseg.predict.run import predict

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
    ap.add_argument("--child", choices=["torchgeo", "terraseg", "terraseg-fp32"])
    ap.add_argument("--scene")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child == "torchgeo":
        return torchgeo_child(args.scene, str(args.bundle), args.out)
    if args.child:
        return terraseg_child(args.scene, str(args.bundle), args.out, args.child == "terraseg-fp32")

    from predict_throughput import demo_bundle, make_scene

    if not (args.packages / "torchgeo").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(args.packages), "--no-deps", *PEERS], check=True)
    work = Path(tempfile.mkdtemp(prefix="terraseg-peers-"))
    scene = work / "scenes" / "scene.tif"
    scene.parent.mkdir()
    make_scene(scene, args.size)
    bundle = args.bundle or demo_bundle(work / "bench.terraseg")
    mp = args.size**2 / 1e6
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(args.packages), os.environ.get("PYTHONPATH", "")]), "HF_HUB_OFFLINE": "1"}
    rows = {}
    for name in ("terraseg", "terraseg-fp32", "torchgeo"):
        out = work / name
        out.mkdir()
        target = str(out / "scene.tif") if name == "torchgeo" else str(out)
        secs = run_child(["--child", name, "--scene", str(scene), "--bundle", str(bundle), "--out", target],
                         env if name == "torchgeo" else None)
        rows[name] = secs
        print(json.dumps({"what": name, "seconds": round(secs, 2), "mpx_per_s": round(mp / secs, 3)}), flush=True)
    import torch

    print(json.dumps({"size": args.size, "cpu_cores": os.cpu_count(), "torch": torch.__version__,
                      "terraseg_default_vs_torchgeo": round(rows["torchgeo"] / rows["terraseg"], 2),
                      "terraseg_fp32_vs_torchgeo": round(rows["torchgeo"] / rows["terraseg-fp32"], 2),
                      "class_agreement_default_vs_torchgeo": round(agreement(work / "terraseg" / "scene.tif", work / "torchgeo" / "scene.tif"), 4),
                      "class_agreement_fp32_vs_torchgeo": round(agreement(work / "terraseg-fp32" / "scene.tif", work / "torchgeo" / "scene.tif"), 4)}))


if __name__ == "__main__":
    main()
