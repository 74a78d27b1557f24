"""Ray batch prediction (``predict --engine ray``) against the single-process path: throughput, scaling, memory, identity.

Two workloads, each predicted (a) in one process (``run_predict``, the local engine), (b) on a local
Ray with 1 worker holding every core, (c) with 2 workers sharing them (or ``--workers``):

* ``many``: ``--scenes`` scenes of ``--scene-size``^2 (whole-scene units);
* ``big``: one ``--big-size``^2 scene (row bands with a one-window halo, assembled into one GeoTIFF).

Printed per run: megapixels per second over the whole call (Ray start-up included) and without Ray's
start-up (``ray.init`` and actor creation, timed apart), scaling efficiency (rate with N workers /
(N x rate with 1 worker)), overhead against the single-process path, the peak RSS of every Ray worker
process (sampled every 0.2 s with psutil) and of the driver, and the pixels whose class differs from
the single-process output (expected: 0).

Usage:
    python benchmarks/ray_scale.py [--bundle B] [--scenes 8] [--scene-size 2048] [--big-size 16384]
        [--workers 1 2] [--device cpu|cuda] [--gpus-per-worker 1] [--skip big|many]

Without --bundle, the U-Net/ResNet18 demo architecture with random weights is used (throughput does
not depend on the weights). Scenes are generated once under --work (default a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_throughput import demo_bundle, make_scene  # noqa: E402


class RssSampler:
    """Peak resident memory of Ray's worker processes (by pid), sampled in a thread."""

    def __init__(self, match: str = "PredictWorker", every: float = 0.2) -> None:
        self.match, self.every, self.peak = match, every, {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for p in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                try:
                    cmd = " ".join(p.info["cmdline"] or [])
                    if self.match in cmd and p.info["memory_info"] is not None:
                        self.peak[p.info["pid"]] = max(self.peak.get(p.info["pid"], 0), p.info["memory_info"].rss)
                except (psutil.Error, TypeError):
                    pass
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def differing(a: Path, b: Path) -> int:
    """Pixels whose class id differs between two class rasters (read window by window)."""
    import rasterio
    from rasterio.windows import Window

    n = 0
    with rasterio.open(a) as x, rasterio.open(b) as y:
        for r in range(0, x.height, 1024):
            w = Window(0, r, x.width, min(1024, x.height - r))
            n += int((x.read(1, window=w) != y.read(1, window=w)).sum())
    return n


def run(bundle: Path, inputs: list[str], out: Path, args, engine: str, workers: int = 1) -> dict:
    import ray

    from terraseg.config.inference import PredictConfig, with_inference
    from terraseg.prediction.run import predict_segmentation as run_predict

    cores = os.cpu_count() or 1
    ray_cfg = {"num_workers": workers, "cpus_per_worker": max(1, cores // workers), "gpus_per_worker": args.gpus_per_worker}
    cfg = with_inference(PredictConfig, inputs=inputs, out_dir=str(out), device=args.device, engine=engine, ray=ray_cfg)
    startup = 0.0
    if engine == "ray":  # Ray's own start-up, timed apart; the engine joins this instance
        t0 = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, object_store_memory=512 * 2**20, log_to_driver=False)
        startup = time.perf_counter() - t0
    try:
        with RssSampler() as rss:
            t0 = time.perf_counter()
            res = run_predict(cfg, bundle)
            wall = time.perf_counter() - t0
    finally:
        if engine == "ray":
            ray.shutdown()
    if res.failures:
        raise SystemExit(f"failures: {res.failures}")
    return {
        "wall_s": round(wall, 2),
        "ray_init_s": round(startup, 2),
        "worker_peak_rss_mb": sorted(round(v / 2**20) for v in rss.peak.values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--scene-size", type=int, default=2048)
    ap.add_argument("--big-size", type=int, default=16384)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gpus-per-worker", type=float, default=0)
    ap.add_argument("--skip", choices=["big", "many"], action="append", default=[])
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = args.work or Path(tempfile.mkdtemp(prefix="terraseg-ray-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or (work / "bench.terraseg")
    if not bundle.exists():
        demo_bundle(bundle)
    workloads = {}
    if "many" not in args.skip:
        files = []
        for i in range(args.scenes):
            p = work / f"scene{i:02d}.tif"
            if not p.exists():
                make_scene(p, args.scene_size)
            files.append(str(p))
        workloads["many"] = (files, args.scenes * args.scene_size**2)
    if "big" not in args.skip:
        p = work / f"big{args.big_size}.tif"
        if not p.exists():
            make_scene(p, args.big_size)
        workloads["big"] = ([str(p)], args.big_size**2)
    import torch

    print(
        json.dumps(
            {
                "cpu_cores": os.cpu_count(),
                "torch": torch.__version__,
                "device": args.device,
                "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            }
        )
    )
    for name, (inputs, pixels) in workloads.items():
        base = run(bundle, inputs, work / f"out-{name}-local", args, "local")
        mp = pixels / 1e6
        base["mpx_per_s"] = round(mp / base["wall_s"], 3)
        print(json.dumps({"workload": name, "engine": "local", "megapixels": round(mp, 1), **base}), flush=True)
        rate1 = None
        for n in args.workers:
            r = run(bundle, inputs, work / f"out-{name}-ray{n}", args, "ray", n)
            r["mpx_per_s"] = round(mp / r["wall_s"], 3)
            if rate1 is None and n == 1:
                rate1 = r["mpx_per_s"]
            r["scaling_efficiency"] = round(r["mpx_per_s"] / (n * rate1), 3) if rate1 else None
            r["overhead_vs_local"] = round(r["wall_s"] / base["wall_s"] - 1, 3)
            r["differing_pixels"] = sum(
                differing(work / f"out-{name}-local" / f"{Path(i).stem}.tif", work / f"out-{name}-ray{n}" / f"{Path(i).stem}.tif")
                for i in inputs
            )
            print(json.dumps({"workload": name, "engine": "ray", "workers": n, **r}), flush=True)
    print(json.dumps({"driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


if __name__ == "__main__":
    main()
