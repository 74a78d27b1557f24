"""Load and speed figures for `terraseg serve`. Prints what it measures.

Cases:

* ``latency``: starts ``terraseg serve BUNDLE --backend B`` on loopback for each backend, then posts a
  512x512 PNG (a crop of a real Massachusetts tile) to ``/v1/segment`` (a classification bundle: ``--image``, by
  default an Intel scene photo, to ``/v1/classify``: the route the bundle's task answers) from 1, 4 and 16 concurrent
  httpx async clients for ``--duration`` seconds each. Prints p50/p95/p99 latency, throughput and
  errors, and the ratio of the 1-client p50 to the bare model: one forward pass of the network on the
  ``(1, C, 512, 512)`` input, and the in-process sliding-window prediction of the same image (the
  exact work the server does, without HTTP, decoding or encoding).
* ``soak``: 16 clients for 60 s against one server (``--mixed``: every other request an invalid
  upload: garbage, truncated, wrong type, empty, a path in the name); a separate thread polls ``/healthz`` every
  0.25 s. Prints errors by status, the server's RSS over time (first/last 10 s, max) and the
  ``/healthz`` latency (p50/p99/max, share over 100 ms).
* ``speed``: PyTorch vs ONNX Runtime forward time of the bundle's network on CPU for
  ``(1, C, S, S)`` inputs, S = 512 and 2048.
* ``passes``: pixels per second of one forward pass of 1, 2, 4, ... ``--max-batch`` windows at sides 256 and
  512 (``--sizes``) on the runtime the server would use, the pass cap the server would take, and the time of
  the input-drift check of the 512x512 crop from per-value counts and pixel by pixel, and the predictor's own
  cost around the network for that crop (one strip on the calling thread, and in thread pools as before).

The load generator runs on the same machine as the server (2 cores here), so it takes some CPU
from it; figures are upper bounds on what a remote client would see.

Usage::

    .venv/bin/python benchmarks/serve_bench.py latency --bundle /tmp/demo.terraseg
    .venv/bin/python benchmarks/serve_bench.py soak --bundle /tmp/demo.terraseg --backend onnx
    .venv/bin/python benchmarks/serve_bench.py speed --bundle /tmp/demo.terraseg
    .venv/bin/python benchmarks/serve_bench.py passes --backend auto
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import rasterio
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TERRASEG_DATA", ROOT.parent / "shared" / "datasets"))
TILE = DATA / "massachusetts-buildings" / "23429155_15.tif"


def png_512(bands: int = 3) -> bytes:
    """A 512x512 crop from the centre of the Massachusetts test tile (751 x 1046 pixels; seeded noise without the
    data) as PNG bytes.

    Raises:
        SystemExit: the tile is smaller than 512 pixels on a side.
    """
    if TILE.exists():
        with rasterio.open(TILE) as ds:
            if ds.height < 512 or ds.width < 512:
                raise SystemExit(f"{TILE} is {ds.width}x{ds.height} pixels; a 512x512 crop needs a larger tile.")
            r0, c0 = (ds.height - 512) // 2, (ds.width - 512) // 2
            img = ds.read(list(range(1, bands + 1)), window=((r0, r0 + 512), (c0, c0 + 512)))
        img = np.clip(img, 0, 255).astype(np.uint8)  # the tile stores 8-bit values as uint16
    else:
        img = np.random.default_rng(0).integers(0, 255, (bands, 512, 512), dtype=np.uint8)
    assert img.shape[1:] == (512, 512), img.shape
    buf = io.BytesIO()
    Image.fromarray(np.moveaxis(img, 0, -1)).save(buf, format="PNG")
    return buf.getvalue()


def ensure_onnx(bundle: Path) -> Path:
    """The bundle itself when it holds model.onnx, else an exported copy in a temporary folder."""
    from terraseg.bundle import Bundle
    from terraseg.prediction.export import export_onnx

    if "model.onnx" in Bundle.load(bundle).extras:
        return bundle
    copy = Path(tempfile.mkdtemp(prefix="serve-bench-")) / bundle.name
    shutil.copy(bundle, copy)
    export_onnx(copy, check_images=[str(TILE)] if TILE.exists() else [], window=256)
    return copy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`terraseg serve` in a subprocess, ready when /readyz answers 200."""

    def __init__(self, bundle: Path, backend: str, extra: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).with_name("terraseg")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "terraseg"]  # a checkout on PYTHONPATH (the GPU check)
        self.proc = subprocess.Popen(
            [*cmd, "serve", str(bundle), "--backend", backend, "--port", str(self.port), "--quiet", *extra]
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}")
            time.sleep(0.3)
        raise SystemExit("server not ready in 120 s")

    def rss_mb(self) -> float:
        p = psutil.Process(self.proc.pid)
        return (p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))) / 1e6

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def invalid_uploads(payload: bytes) -> list[tuple[str, bytes]]:
    """Hostile or broken uploads the server must answer with 4xx: garbage, truncated, wrong type, empty, a path."""
    rng = np.random.default_rng(1)
    return [
        ("noise.png", rng.integers(0, 255, 50_000, dtype=np.uint8).tobytes()),
        ("cut.png", payload[: len(payload) // 3]),
        ("notes.txt", b"hello"),
        ("empty.png", b""),
        ("../etc.png", payload),
        ("fake.tif", b"II*\x00" + b"\xff" * 4000),
    ]


async def load(
    url: str,
    payload: bytes,
    clients: int,
    duration: float,
    invalid: list[tuple[str, bytes]] | None = None,
    path: str = "/v1/segment",
) -> tuple[list[float], dict[int, int], float]:
    """``clients`` concurrent loops posting ``payload`` (and, every other request, one of ``invalid``);
    returns latencies (s) and error counts by status of the valid requests, and the wall time. Answers to
    invalid uploads are counted in ``load.invalid`` by status."""
    lat: list[float] = []
    errors: dict[int, int] = {}
    load.invalid = {}  # type: ignore[attr-defined]
    count = [0]
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        t_end = time.perf_counter() + duration

        async def worker() -> None:
            while time.perf_counter() < t_end:
                count[0] += 1
                if invalid and count[0] % 2 == 0:
                    name, body = invalid[count[0] // 2 % len(invalid)]
                    try:
                        r = await client.post(
                            "/v1/segment", params={"format": "png"}, files={"file": (name, body, "application/octet-stream")}
                        )
                        code = (
                            r.status_code if r.headers.get("content-type", "").startswith("application/json") else -r.status_code
                        )
                    except httpx.HTTPError:
                        code = -1
                    load.invalid[code] = load.invalid.get(code, 0) + 1  # type: ignore[attr-defined]
                    continue
                t0 = time.perf_counter()
                try:
                    r = await client.post(path, params={"format": "png"}, files={"file": ("crop.png", payload, "image/png")})
                    code = r.status_code
                    answer = r.content[:8] == b"\x89PNG\r\n\x1a\n" or (path == "/v1/classify" and b"predicted" in r.content)
                    ok = code == 200 and answer
                except httpx.HTTPError:
                    code, ok = -1, False
                if ok:
                    lat.append(time.perf_counter() - t0)
                else:
                    errors[code] = errors.get(code, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return lat, errors, wall


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def bare_times(bundle: Path, backend: str, payload: bytes, window: int | None, reps: int = 10) -> tuple[float, float]:
    """Median seconds of one forward pass on (1, C, 512, 512), and of in-process sliding-window prediction."""
    import torch

    from terraseg.bundle import Bundle
    from terraseg.data.sources import scene_from_path
    from terraseg.infer.sliding import predictor_for

    b = Bundle.load(bundle)
    pred = predictor_for(b, window=window, backend=backend)
    x = np.random.default_rng(0).standard_normal((1, b.manifest.input.bands, 512, 512)).astype(np.float32)
    pred.backend(x)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "crop.png"
        p.write_bytes(payload)
        scene = scene_from_path(p, ignore_index=b.manifest.ignore_index)
        pred.predict_array(scene)
        fw, sw = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            pred.backend(x)
            fw.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            pred.predict_array(scene)
            sw.append(time.perf_counter() - t0)
    del torch
    return statistics.median(fw), statistics.median(sw)


def bare_batch(bundle: Path, backend: str, batch: int = 16, reps: int = 10) -> float:
    """Images per second of the bare network on ``(batch, C, S, S)`` already on its device (the server's runtime):
    S = 512 for segmentation, the classifier's input size for classification."""
    import torch

    from terraseg.bundle import Bundle
    from terraseg.config.inference import InferenceConfig
    from terraseg.tasks import task_for

    b = Bundle.load(bundle)
    task = task_for(b)
    pred = task.inference(b, InferenceConfig(backend=backend))
    side = 512 if task.dense else task.input_size(b)
    x = torch.randn(batch, b.manifest.input.bands, side, side, device=pred.device)
    sync = torch.cuda.synchronize if pred.device.type == "cuda" else (lambda: None)
    pred.backend.probabilities(x)
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        pred.backend.probabilities(x)
    sync()
    return reps * batch / (time.perf_counter() - t0)


def classify_payload(image: Path | None) -> bytes:
    """The upload of a classification bundle: ``image``, or the first Intel scene photo (150x150 JPEG) as PNG."""
    path = image or sorted((DATA / "intel-scenes" / "seg_train").rglob("*.jpg"))[0]
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def case_latency(a: argparse.Namespace) -> None:
    from terraseg.bundle import Bundle
    from terraseg.tasks import task_for

    task = task_for(Bundle.load(a.bundle))
    route = f"/v1/{task.endpoint}"
    payload = png_512() if task.dense else classify_payload(a.image)
    extra = (["--window", str(a.window)] if a.window else []) + (["--workers", str(a.workers)] if a.workers > 1 else [])
    if a.batch_wait_ms is not None:
        extra += ["--batch-wait-ms", str(a.batch_wait_ms), "--max-batch", str(a.max_batch)]
    print(
        f"512x512 PNG ({len(payload) / 1e3:.0f} kB), {a.duration:.0f} s per level, window {a.window or 'bundle default'}, "
        f"{a.workers} server process(es)"
    )
    print(f"{task.name} bundle: POST {route}")
    print("backend clients   n   err  p50_ms  p95_ms  p99_ms  req/s")
    summary = []
    for backend in a.backends:
        fw, sw = bare_times(a.bundle, backend, payload, a.window) if task.dense else (float("nan"), float("nan"))
        srv = Server(a.bundle, backend, extra)
        try:
            print("served:", httpx.get(srv.url + "/v1/models").json()[0]["batching"], flush=True)
            asyncio.run(load(srv.url, payload, 2, 3, path=route))  # warm-up
            p50_1 = None
            levels = []
            for c in a.clients:
                lat, err, wall = asyncio.run(load(srv.url, payload, c, a.duration, path=route))
                p50 = pct(lat, 50) * 1e3
                p50_1 = p50 if p50_1 is None else p50_1
                levels.append((c, len(lat) / wall, pct(lat, 99)))
                print(
                    f"{backend:7s} {c:7d} {len(lat):4d} {sum(err.values()):5d} {p50:7.0f} {pct(lat, 95) * 1e3:7.0f} "
                    f"{pct(lat, 99) * 1e3:7.0f} {len(lat) / wall:6.2f}",
                    flush=True,
                )
        finally:
            srv.stop()
        wait = a.batch_wait_ms if a.batch_wait_ms is not None else 0.0
        for c, rps, p99 in levels:  # against the bare forward at a batch of as many images as clients
            ips = bare_batch(a.bundle, backend, batch=min(c, a.max_batch), reps=max(3, 40 // c))
            batch_s = min(c, a.max_batch) / ips
            print(
                f"{backend}: {c} clients {rps:.2f} req/s vs the bare forward at batch {min(c, a.max_batch)} {ips:.2f} images/s: "
                f"ratio {rps / ips:.3f}; p99 {p99 * 1e3:.0f} ms vs wait + two batch times {wait + 2e3 * batch_s:.0f} ms",
                flush=True,
            )
        summary.append((backend, fw, sw, p50_1))
    print("\nbackend  forward_1x512_ms  sliding_predict_ms  p50_1client/forward  p50_1client/sliding")
    for backend, fw, sw, p50 in summary:
        print(f"{backend:7s} {fw * 1e3:17.0f} {sw * 1e3:19.0f} {p50 / (fw * 1e3):20.2f} {p50 / (sw * 1e3):20.2f}")


def case_soak(a: argparse.Namespace) -> None:
    payload = png_512()
    extra = ["--window", str(a.window)] if a.window else []
    srv = Server(a.bundle, a.backend[0], extra)
    health: list[float] = []
    health_err = 0
    rss: list[tuple[float, float]] = []
    stop = threading.Event()

    def prober() -> None:
        nonlocal health_err
        with httpx.Client(base_url=srv.url, timeout=5) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    ok = c.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                health.append(time.perf_counter() - t0) if ok else None
                health_err += 0 if ok else 1
                rss.append((time.time(), srv.rss_mb()))
                time.sleep(0.25)

    try:
        asyncio.run(load(srv.url, payload, 2, 3))  # warm-up
        th = threading.Thread(target=prober, daemon=True)
        t_start = time.time()
        th.start()
        lat, err, wall = asyncio.run(
            load(srv.url, payload, a.clients[0], a.duration, invalid_uploads(payload) if a.mixed else None)
        )
        stop.set()
        th.join()
    finally:
        srv.stop()
    first = [m for t, m in rss if t - t_start < 10]
    last = [m for t, m in rss if t - t_start > wall - 10]
    h = np.array(health) * 1e3
    print(
        f"soak: backend {a.backend[0]}, {a.clients[0]} clients, {wall:.0f} s, {len(lat)} requests ok ({len(lat) / wall:.2f}/s), "
        f"errors {sum(err.values())} {err or ''}"
    )
    if a.mixed:
        bad = load.invalid  # type: ignore[attr-defined]
        print(
            f"invalid uploads: {sum(bad.values())} answered by status {dict(sorted(bad.items()))} "
            f"(4xx JSON expected; negative: not JSON; -1: no answer); 5xx: {sum(v for k, v in bad.items() if abs(k) >= 500)}"
        )
    print(f"latency ms p50 {pct(lat, 50) * 1e3:.0f} p95 {pct(lat, 95) * 1e3:.0f} p99 {pct(lat, 99) * 1e3:.0f}")
    if first and last:
        print(f"server RSS change first -> last 10 s: {(np.mean(last) / np.mean(first) - 1) * 100:+.1f}%")
    print(
        f"server RSS MB: first 10 s mean {np.mean(first):.0f}, last 10 s mean {np.mean(last):.0f}, max {max(m for _, m in rss):.0f}"
    )
    buckets = {}
    for t, m in rss:
        buckets.setdefault(int((t - t_start) // 10) * 10, []).append(m)
    print("server RSS MB by 10 s:", " ".join(f"{k}s:{max(v):.0f}" for k, v in sorted(buckets.items())))
    print(
        f"/healthz: {len(h)} probes, errors {health_err}, p50 {np.median(h):.1f} ms, p99 {np.percentile(h, 99):.1f} ms, "
        f"max {h.max():.1f} ms, over 100 ms: {(h > 100).mean() * 100:.1f}%"
    )


def case_speed(a: argparse.Namespace) -> None:
    import torch

    from terraseg.bundle import Bundle
    from terraseg.infer.onnx import onnx_backend_for

    b = Bundle.load(a.bundle)
    model = b.model.eval()
    ort = onnx_backend_for(b)
    print(f"{b.manifest.model.arch}/{b.manifest.model.encoder}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print("size   torch_ms  onnx_ms  torch/onnx  MP/s_torch  MP/s_onnx")
    for s in a.sizes:
        x = np.random.default_rng(0).standard_normal((1, b.manifest.input.bands, s, s)).astype(np.float32)
        reps = max(2, int(10 * (512 / s) ** 2))
        times = {}
        for name, fn in (("torch", lambda: _torch_fwd(model, x)), ("onnx", lambda: ort.logits(x))):
            fn()
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            times[name] = statistics.median(ts)
        mp = s * s / 1e6
        print(
            f"{s:5d} {times['torch'] * 1e3:9.0f} {times['onnx'] * 1e3:8.0f} {times['torch'] / times['onnx']:10.2f} "
            f"{mp / times['torch']:11.2f} {mp / times['onnx']:10.2f}"
        )


def case_passes(a: argparse.Namespace) -> None:
    """The two measurements behind the server's pass size and drift check, on the served runtime.

    Pixels per second of one forward pass for 1, 2, 4, ... ``--max-batch`` windows at each ``--sizes`` side (the
    server caps a shared pass at the fastest, :func:`terraseg.infer.backends.best_batch_pixels`); then the input
    drift check of the 512x512 crop from per-value counts (the server's) and pixel by pixel (before), and
    whether the two reports agree.
    """
    import torch

    import terraseg.infer.drift as drift
    from terraseg.bundle import Bundle
    from terraseg.data.sources import scene_from_path
    from terraseg.devices import cpu_model
    from terraseg.infer.backends import best_batch_pixels
    from terraseg.infer.sliding import predictor_for

    b = Bundle.load(a.bundle)
    pred = predictor_for(b, backend=a.backend[0])
    rt = getattr(pred.backend, "runtime", None)
    print(
        f"{cpu_model()} x{os.cpu_count()}; {b.manifest.model.arch}/{b.manifest.model.encoder}, runtime "
        f"{rt.backend + ' ' + rt.precision + (' NHWC' if rt.channels_last else '') if rt else a.backend[0]}, torch {torch.__version__}"
    )
    print("side  windows  ms_per_pass    MP/s")
    for side in a.sizes:
        cap, seconds = best_batch_pixels(pred.backend, b.in_channels, side, a.max_batch, stop_below=None)
        for n, sec in seconds.items():
            print(f"{side:4d} {n:8d} {sec * 1e3:12.1f} {n * side * side / sec / 1e6:7.2f}")
        print(
            f"{side:4d}  pass cap: {'none (the largest batch was fastest)' if cap is None else f'{cap // (side * side)} window(s) ({cap:,} pixels)'}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "crop.png"
        path.write_bytes(png_512())
        scene = scene_from_path(path, ignore_index=b.manifest.ignore_index)
        scene.read(0, 0, scene.height, scene.width, labels=False)  # decoded once, as in the server
        reports, summary = {}, drift.window_summary
        for name, fn in (
            ("per-value counts", summary),
            ("per pixel", lambda x, lo, hi, e: summary(x.astype(np.float64), lo, hi, e)),
        ):
            drift.window_summary = fn
            try:
                drift.bundle_drift(b, scene)
                ts = []
                for _ in range(20):
                    t0 = time.perf_counter()
                    reports[name] = drift.bundle_drift(b, scene)
                    ts.append(time.perf_counter() - t0)
            finally:
                drift.window_summary = summary
            print(f"drift check of the {scene.width}x{scene.height} crop, {name}: {statistics.median(ts) * 1e3:.1f} ms")
        a1, a2 = reports.values()
        print("same report:", a1 is None and a2 is None or (a1.smd, a1.out_of_range, a1.psi) == (a2.smd, a2.out_of_range, a2.psi))
        # the predictor's own cost around the network (read, normalise, blend, argmax, hand-over) for a one-window
        # upload, with a 1x1 convolution as the network so that the rest shows: the one strip read and handed on
        # by the calling thread (now) against two thread pools started per call (before)
        from concurrent.futures import ThreadPoolExecutor

        import terraseg.infer.sliding as sliding
        from terraseg.infer.backends import TorchBackend

        side = min(scene.height, scene.width) // 32 * 32
        tiny = sliding.SlidingWindowPredictor(
            TorchBackend(torch.nn.Conv2d(b.in_channels, b.num_classes, 1).eval()),
            pred.stats,
            b.num_classes,
            window=side,
            batch_size=1,
        )
        inline = sliding._Inline
        for name, pools in (
            ("one strip on the calling thread", inline),
            ("thread pools per call", lambda: ThreadPoolExecutor(1)),
        ):
            sliding._Inline = pools
            try:
                ts = []
                for _ in range(100):
                    t0 = time.perf_counter()
                    tiny.predict_array(scene)
                    ts.append(time.perf_counter() - t0)
            finally:
                sliding._Inline = inline
            print(
                f"predictor around a 1x1 convolution, the {scene.width}x{scene.height} crop, {name}: {statistics.median(ts) * 1e3:.1f} ms"
            )


def _torch_fwd(model, x: np.ndarray):
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(x))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", choices=["latency", "soak", "speed", "passes"])
    ap.add_argument(
        "--bundle",
        type=Path,
        default=Path(os.environ.get("TERRASEG_BUNDLE", ROOT / "runs/massachusetts-buildings/model.terraseg")),
    )
    ap.add_argument("--backend", dest="backends", nargs="+", default=["auto", "torch", "onnx"])
    ap.add_argument("--clients", nargs="+", type=int, default=None)
    ap.add_argument("--duration", type=float, default=None, help="seconds per load level (latency 20, soak 60)")
    ap.add_argument("--window", type=int, default=None, help="serve --window (default: the bundle's)")
    ap.add_argument("--sizes", nargs="+", type=int, default=[512, 2048])
    ap.add_argument("--workers", type=int, default=1, help="serve --workers (server processes)")
    ap.add_argument("--batch-wait-ms", type=float, default=None, help="serve --batch-wait-ms (default: the server's)")
    ap.add_argument("--max-batch", type=int, default=16, help="serve --max-batch")
    ap.add_argument("--mixed", action="store_true", help="soak: every other request is an invalid upload (4xx expected)")
    ap.add_argument("--image", type=Path, default=None, help="latency, classification bundle: the image posted")
    a = ap.parse_args()
    if not a.bundle.exists():
        raise SystemExit(f"{a.bundle}: no bundle; run `make demo` or pass --bundle")
    a.bundle = ensure_onnx(a.bundle) if "onnx" in a.backends else a.bundle
    a.backend = a.backends
    if a.case == "latency":
        a.clients, a.duration = a.clients or [1, 4, 16], a.duration or 20
        case_latency(a)
    elif a.case == "soak":
        a.clients, a.duration = a.clients or [16], a.duration or 60
        case_soak(a)
    elif a.case == "passes":
        a.sizes = a.sizes if a.sizes != [512, 2048] else [256, 512]
        case_passes(a)
    else:
        case_speed(a)


if __name__ == "__main__":
    main()
