"""Prediction throughput and peak memory of the streaming sliding-window predictor, on the CPU or a GPU.

For each scene size, a 3-band uint8 GeoTIFF is generated (window by window) and predicted in a
fresh child process through the CLI's path (``predict_to_files``: reader thread, on-device
normalisation / blending / argmax, writer thread, DEFLATE GeoTIFF), which reports: megapixels per
second end to end; the bare network on the same number of windows at the same precision (batches
already on the device); their ratio (1.0: reading, normalising, blending and writing cost nothing);
the output size and the child's peak RSS. Each size runs in float32 and in the fast precision of the
device (bf16 on CUDA; ``auto`` on a CPU: the backend/precision ranking of terraseg.infer.runtime).
``--codecs`` compares ZSTD and uncompressed outputs. Then fp32 (NCHW) is compared with bf16 autocast +
channels_last on a smaller scene (speed and the share of pixels whose class differs). Whenever CUDA
exists the device defaults to ``cuda`` (the GPU section); ``--device cpu`` forces the CPU.

``--candidates`` instead runs every backend candidate of this machine end to end on one scene
(PyTorch float32 NHWC and NCHW, bf16 where native, ONNX Runtime, INT8 where the bundle has it) and the
default (``auto``: the measured choice of terraseg.infer.runtime), best of two runs each, and prints
each one's megapixels per second, the default's ratio to the fastest, and the share of pixels whose
class differs from PyTorch float32 NCHW and from the fastest candidate.

Usage:
    python benchmarks/predict_throughput.py [--bundle runs/massachusetts-buildings/model.terraseg]
        [--sizes 4096 16384] [--window 512] [--overlap 0.25] [--batch-size 4] [--compare-size 1024]
        [--device cpu|cuda] [--codecs] [--encoder resnet34] [--readers N]
    python benchmarks/predict_throughput.py --candidates [--bundle B] [--encoder resnet34] [--candidates-size 2048]

Without --bundle, a U-Net/ResNet18 bundle (the demo architecture) with random weights is used:
throughput does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_scene(path: Path, size: int) -> None:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    prof = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs="EPSG:26986",
        transform=from_origin(200000, 900000, 1.0, 1.0),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        BIGTIFF="IF_SAFER",
    )
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **prof) as dst:
        for r in range(0, size, 1024):
            h = min(1024, size - r)
            rows = np.arange(r, r + h)[:, None]
            cols = np.arange(size)[None, :]
            base = ((rows // 37 + cols // 53) % 7 * 30).astype(np.uint8)
            block = np.stack([base, base // 2 + 40, 255 - base]) + rng.integers(0, 20, (3, h, size), dtype=np.uint8)
            dst.write(block, window=Window(0, r, size, h))


def demo_bundle(path: Path, encoder: str = "resnet18") -> Path:
    import torch

    from terraseg.bundle import Bundle, BundleManifest, InputSpec
    from terraseg.config import ClassSpec, ModelConfig
    from terraseg.data.normalize import NormStats
    from terraseg.models.factory import build_model

    torch.manual_seed(0)
    mc = ModelConfig(arch="unet", encoder=encoder)
    stats = NormStats("meanstd", [70.0, 69.0, 56.0], [38.0, 35.0, 35.0], [11.0, 14.0, 6.0], [157.0, 155.0, 150.0])
    m = BundleManifest(
        name="bench",
        model=mc,
        classes=[ClassSpec(name="background"), ClassSpec(name="building")],
        input=InputSpec(bands=3, dtype="uint8", normalization=stats, train_window=512, predict_window=512),
    )
    return Bundle(m, build_model(mc, 3, 2)).save(path)


def child(args: argparse.Namespace) -> None:
    """Predict one scene through the CLI's path (predict_to_files); print a JSON line of figures."""
    import torch

    from terraseg.bundle import Bundle
    from terraseg.config.inference import InferenceConfig
    from terraseg.data.rasters import RasterScene
    from terraseg.infer.sliding import predictor_for
    from terraseg.prediction.outputs import predict_to_files

    b = Bundle.load(args.bundle)
    layout = {"nhwc": True, "nchw": False}.get(args.layout, args.channels_last)
    opts = InferenceConfig(
        window=args.window,
        overlap=args.overlap,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        channels_last=layout,
        backend=args.backend,
        readers=args.readers,
    )
    t_setup = time.perf_counter()
    pred = predictor_for(b, opts)  # with 'auto': the measured choice (or the cached one)
    setup = time.perf_counter() - t_setup
    rt = getattr(pred.backend, "runtime", None)
    scene = RasterScene(args.scene, cache=False)
    th, tw, ys, xs = pred.geometry(scene.height, scene.width)
    n_tiles = len(ys) * len(xs)
    bs = pred.batch_size
    cuda = pred.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    # warm-up on the device (cuDNN / oneDNN kernel selection for the full and the last partial batch)
    x = torch.randn(bs, b.in_channels, th, tw, device=pred.device)
    pred.backend.probabilities(x)
    if len(xs) % bs:
        pred.backend.probabilities(x[: len(xs) % bs])
    sync()
    codec, _, level = args.compress.partition(":")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    outs = predict_to_files(
        pred,
        scene,
        Path(args.out),
        b.class_names,
        [c.color for c in b.manifest.classes],
        compress=codec,
        level=int(level) if level else None,
    )
    sync()
    total = time.perf_counter() - t0
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
    # bare network: the same number of windows at the same precision and batch, batches already on the device
    reps = max(3, min(20, n_tiles // bs))
    with torch.inference_mode():
        pred.backend.probabilities(x)
        sync()
        t1 = time.perf_counter()
        for _ in range(reps):
            pred.backend.probabilities(x)
        sync()
    forward_total = (time.perf_counter() - t1) / (reps * bs) * n_tiles
    # one reader thread alone, on up to 8 strips
    t2 = time.perf_counter()
    rs = ys[:8]
    for y in rs:
        scene.read(y, 0, th, max(scene.width, tw), labels=False)
    read_mpx = len(rs) * th * scene.width / 1e6 / (time.perf_counter() - t2)
    mp = scene.height * scene.width / 1e6
    print(
        json.dumps(
            {
                "size": scene.height,
                "device": str(pred.device),
                "backend": rt.backend if rt else "?",
                "precision": rt.precision if rt else args.precision,
                "channels_last": rt.channels_last if rt else None,
                "tiles": n_tiles,
                "batch_size": bs,
                "readers": pred.readers,
                "read_one_thread_megapixels_per_s": round(read_mpx, 1),
                "seconds": round(total, 2),
                "megapixels_per_s": round(mp / total, 3),
                "bare_forward_megapixels_per_s": round(mp / forward_total, 3),
                "ratio_to_bare_forward": round(forward_total / total, 3),
                "gpu_peak_mb": round(gpu_peak),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "output": outs["prediction"],
                "output_mb": round(Path(outs["prediction"]).stat().st_size / 1e6, 2),
                "torch_threads": torch.get_num_threads(),
                "setup_seconds": round(setup, 2),
            }
        ),
        flush=True,
    )


def run_child(
    bundle: Path,
    scene: Path,
    out: Path,
    a: argparse.Namespace,
    precision: str = "32",
    cl: bool = True,
    backend: str = "torch",
    compress: str = "deflate",
    readers: int | None = None,
    layout: str = "given",
) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--bundle",
        str(bundle),
        "--scene",
        str(scene),
        "--out",
        str(out),
        "--window",
        str(a.window),
        "--overlap",
        str(a.overlap),
        "--precision",
        precision,
        "--device",
        a.device,
        "--backend",
        backend,
        "--compress",
        compress,
        "--channels-last" if cl else "--no-channels-last",
        "--readers",
        str(readers if readers is not None else a.readers),
        "--layout",
        layout,
    ]
    if a.batch_size:
        cmd += ["--batch-size", str(a.batch_size)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def _line(size: int, r: dict) -> str:
    return (
        f"{size:>6}^2 {r['device']} {r['backend']} {r['precision']}{' NHWC' if r['channels_last'] else ''}: "
        f"{r['megapixels_per_s']:.3f} MP/s end to end, bare forward {r['bare_forward_megapixels_per_s']:.3f} MP/s, "
        f"ratio {r['ratio_to_bare_forward']:.3f}, {r['tiles']} windows, batch {r['batch_size']}, {r['readers']} readers "
        f"(one alone reads {r['read_one_thread_megapixels_per_s']:.0f} MP/s), {r['seconds']:.2f} s, output {r['output_mb']} MB, "
        f"peak RSS {r['peak_rss_mb']:.0f} MB" + (f", GPU peak {r['gpu_peak_mb']} MB" if r.get("gpu_peak_mb") else "")
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path)
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    p.add_argument("--compare-size", type=int, default=1024)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=None, help="windows per forward (default: terraseg's choice for the device)")
    p.add_argument("--readers", type=int, default=0, help="reader threads (0: terraseg's choice for the device)")
    p.add_argument("--encoder", default="resnet18", help="encoder of the random-weights U-Net used without --bundle")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--scene", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--precision", default="32", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    p.add_argument("--compress", default="deflate", help=argparse.SUPPRESS)  # codec[:level]
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True, help=argparse.SUPPRESS)
    p.add_argument("--layout", default="given", help=argparse.SUPPRESS)  # auto | nhwc | nchw | given (--channels-last)
    p.add_argument("--candidates", action="store_true", help="compare every backend candidate with the default on one scene")
    p.add_argument("--candidates-size", type=int, default=2048, help="side of the --candidates scene")
    p.add_argument(
        "--codecs",
        action="store_true",
        help="also compare output codecs and levels (deflate, deflate:1, zstd:1, zstd, "
        "none) and one reader against the default at the first size",
    )
    a = p.parse_args()
    if a.child:
        return child(a)
    work = a.workdir or Path(tempfile.mkdtemp(prefix="terraseg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = a.bundle or demo_bundle(work / "bench.terraseg", a.encoder)
    from terraseg.devices import cpu_flags, cpu_model

    gpu = ""
    if a.device.startswith("cuda"):
        import torch

        gpu = f" ({torch.cuda.get_device_name()}, torch {torch.__version__})"
    print(
        f"bundle: {bundle} ({a.encoder if not a.bundle else 'given'})  window {a.window}  overlap {a.overlap}  "
        f"batch {a.batch_size or 'auto'}  device {a.device}{gpu}  "
        f"cpu {cpu_model()} x{os.cpu_count()} ({', '.join(sorted(cpu_flags() & {'avx2', 'avx512f', 'avx512_bf16', 'amx_bf16', 'avx512_vnni'}))})"
    )
    if a.candidates:
        return candidates(bundle, work, a)
    for size in a.sizes:
        scene = work / f"scene_{size}.tif"
        if not scene.exists():
            t = time.perf_counter()
            make_scene(scene, size)
            print(f"generated {scene.name} ({size}x{size}x3 uint8) in {time.perf_counter() - t:.0f} s")
        fast = "bf16" if a.device.startswith("cuda") else "auto"
        for prec in ["32", fast] if fast != "32" else ["32"]:
            print(
                _line(
                    size,
                    run_child(
                        bundle,
                        scene,
                        work / f"pred_{size}_{prec}",
                        a,
                        precision=prec,
                        backend="torch" if prec != "auto" else "auto",
                    ),
                ),
                flush=True,
            )
        if a.codecs and size == a.sizes[0]:
            be = "torch" if fast != "auto" else "auto"
            for codec in ("deflate:1", "zstd:1", "zstd", "none"):
                r = run_child(
                    bundle, scene, work / f"pred_{size}_{codec.replace(':', '')}", a, precision=fast, backend=be, compress=codec
                )
                print(f"  codec {codec}: " + _line(size, r), flush=True)
            r = run_child(bundle, scene, work / f"pred_{size}_1reader", a, precision=fast, backend=be, readers=1)
            print("  one reader: " + _line(size, r), flush=True)
        os.remove(scene)
    # fp32 vs bf16 autocast + channels_last
    import rasterio

    size = a.compare_size
    scene = work / f"scene_{size}.tif"
    make_scene(scene, size)
    r32 = run_child(bundle, scene, work / "cmp_fp32", a, cl=False)
    rbf = run_child(bundle, scene, work / "cmp_bf16", a, precision="bf16", cl=True)
    with rasterio.open(r32["output"]) as x, rasterio.open(rbf["output"]) as y:
        diff = float((x.read(1) != y.read(1)).mean())
    print(
        f"{size:>6}^2 fp32: {r32['megapixels_per_s']:.3f} MP/s; bf16+channels_last: {rbf['megapixels_per_s']:.3f} MP/s "
        f"(x{rbf['megapixels_per_s'] / r32['megapixels_per_s']:.2f}); pixels whose class differs: {diff:.4%}"
    )


def candidates(bundle: Path, work: Path, a: argparse.Namespace) -> None:
    """Every candidate of this machine, and the default, end to end on one scene (module docstring)."""
    import rasterio

    from terraseg.bundle import Bundle
    from terraseg.infer.runtime import cpu_candidates, ensure_onnx_graph

    os.environ.setdefault("TERRASEG_CACHE", str(work / "cache"))  # the default measures its choice on its first run
    b = Bundle.load(bundle)
    names = [c.name for c in cpu_candidates(b)]
    if "onnx:32:nchw" in names and not ensure_onnx_graph(b):
        names.remove("onnx:32:nchw")
    size = a.candidates_size
    scene = work / f"scene_{size}.tif"
    if not scene.exists():
        make_scene(scene, size)
    runs = {n: tuple(n.split(":")) for n in names} | {"default (auto)": ("auto", "auto", "auto")}
    best: dict[str, dict] = {}
    setup = 0.0  # the default's first load: the measured choice (later runs read it from the cache)
    for _rep in range(2):  # interleaved: a burst of load elsewhere hits every candidate alike
        for name, (backend, prec, layout) in runs.items():
            r = run_child(
                bundle,
                scene,
                work / f"cand_{name.split()[0].replace(':', '_')}",
                a,
                precision=prec,
                backend=backend,
                layout=layout,
            )
            if name.startswith("default"):
                setup = max(setup, r["setup_seconds"])
            if name not in best or r["megapixels_per_s"] > best[name]["megapixels_per_s"]:
                best[name] = r

    def classes(r: dict):
        with rasterio.open(r["output"]) as ds:
            return ds.read(1)

    ref = classes(best["torch:32:nchw"]) if "torch:32:nchw" in best else None
    fastest = max((n for n in best if not n.startswith("default")), key=lambda n: best[n]["megapixels_per_s"])
    top = classes(best[fastest])
    for name, r in sorted(best.items(), key=lambda kv: -kv[1]["megapixels_per_s"]):
        ids = classes(r)
        vs_ref = "" if ref is None else f", {float((ids != ref).mean()):.4%} of pixels differ from torch:32:nchw"
        print(
            f"{size}^2 {name:16s} {r['backend']}:{r['precision']}:{'nhwc' if r['channels_last'] else 'nchw'}  "
            f"{r['megapixels_per_s']:.3f} MP/s ({r['seconds']:.2f} s){vs_ref}, {float((ids != top).mean()):.4%} from the fastest",
            flush=True,
        )
    d = best["default (auto)"]
    print(
        f"default / fastest ({fastest}): {d['megapixels_per_s'] / best[fastest]['megapixels_per_s']:.3f}; "
        f"the default's first load took {setup:.1f} s (its choice measured once per machine and bundle, then cached)"
    )


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
