"""`terraseg serve` against a LitServe server (Lightning AI's serving library) doing the same work, on one machine.

Both decode a 512x512 PNG upload, check it for input drift (terraseg.infer.drift.bundle_drift), predict it
with the same bundle and the same predictor (``auto`` backend, terraseg.infer.sliding.predictor_for) and answer
the class ids as a PNG (compression level 1) with the drift flags in a header: the same work per request. LitServe batches requests
itself (``max_batch_size``, ``batch_timeout``) and runs the model in a worker process fed by queues;
terraseg batches windows in its own thread (``--batch-wait-ms``, ``--max-batch``). The load generator is
serve_bench's (httpx async clients for ``--duration`` seconds at each client count). terraseg's hardening
(upload limits, time budget, queue limit, JSON errors) is not rebuilt in the LitServe server: it is the
speed of the serving core that is compared.

Usage::

    pip install litserve
    .venv/bin/python benchmarks/litserve_compare.py [--bundle runs/massachusetts-buildings/model.terraseg]
        [--clients 1 4 16] [--duration 15] [--max-batch 16] [--wait-ms 5] [--rounds 2]

Each round measures both servers one after the other, the order swapped from round to round so that neither
gains from running first (terraseg measured 11.8 req/s at 1 client after LitServe, 13.0 on its own), and the
summary gives each server's median over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import litserve as ls  # noqa: E402
from serve_bench import ROOT, Server, free_port, load, pct, png_512  # noqa: E402


class SegmentAPI(ls.LitAPI):
    """The same work as ``/v1/segment?format=png``: decode, drift check, predict (terraseg's predictor), class ids as a PNG."""

    def setup(self, device):
        from terraseg.bundle import Bundle
        from terraseg.config.inference import InferenceConfig
        from terraseg.infer.sliding import predictor_for

        self.bundle = Bundle.load(os.environ["LIT_BUNDLE"])
        self.pred = predictor_for(self.bundle, InferenceConfig())
        self.tmp = Path(tempfile.mkdtemp(prefix="lit-"))

    def decode_request(self, request):
        from terraseg.data.sources import scene_from_path
        from terraseg.infer.drift import bundle_drift

        upload = request["file"]
        data = upload.file.read() if hasattr(upload, "file") else upload
        path = self.tmp / f"{os.getpid()}-{time.monotonic_ns()}.png"
        path.write_bytes(data)
        scene = scene_from_path(path, ignore_index=self.bundle.manifest.ignore_index)
        return scene, bundle_drift(self.bundle, scene)

    def predict(self, x):
        if isinstance(x, list):
            return [(ids, d) for (ids, _), (_, d) in zip(self.pred.predict_batch([s for s, _ in x]), x)]
        return self.pred.predict_array(x[0], probabilities=False)[0], x[1]

    def encode_response(self, out):
        from fastapi import Response
        from PIL import Image

        from terraseg.io.predictions import encode_class_ids

        ids, drift = out
        buf = io.BytesIO()
        Image.fromarray(encode_class_ids(np.asarray(ids), self.bundle.num_classes)).save(buf, format="PNG", compress_level=1)
        flags = ",".join(drift.flagged) if drift is not None and drift.drifted else "none"
        return Response(content=buf.getvalue(), media_type="image/png", headers={"X-Terraseg-Drift": flags})


def lit_server(bundle: str, port: int, max_batch: int, wait_ms: float) -> None:
    """Run the LitServe server (in a child process)."""
    os.environ["LIT_BUNDLE"] = bundle
    api = SegmentAPI(max_batch_size=max_batch, batch_timeout=wait_ms / 1000.0, api_path="/v1/segment")
    ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=120).run(port=port, log_level="warning")


def _lit_rows(a, payload: bytes) -> list[tuple[int, list[float], int, float]]:
    """Start the LitServe server in its own process group, load it at each client count, end the group."""
    import signal

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--bundle",
            a.bundle,
            "--lit-child",
            str(port),
            "--max-batch",
            str(a.max_batch),
            "--wait-ms",
            str(a.wait_ms),
        ],
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        return _levels(url, payload, a)
    finally:  # LitServe's inference workers are processes of their own: end the whole group, or they keep polling
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(2)


def _terraseg_rows(a, payload: bytes) -> list[tuple[int, list[float], int, float]]:
    """Start ``terraseg serve`` with the same batch and wait, load it at each client count, stop it."""
    srv = Server(Path(a.bundle), "auto", ["--batch-wait-ms", str(a.wait_ms), "--max-batch", str(a.max_batch)])
    try:
        return _levels(srv.url, payload, a)
    finally:
        srv.stop()
        time.sleep(2)


def _levels(url: str, payload: bytes, a) -> list[tuple[int, list[float], int, float]]:
    """A 3 s warm-up, then ``(clients, latencies, errors, req/s)`` per client count."""
    asyncio.run(load(url, payload, 2, 3))
    rows = []
    for c in a.clients:
        lat, err, wall = asyncio.run(load(url, payload, c, a.duration))
        rows.append((c, lat, sum(err.values()), len(lat) / wall))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(ROOT / "runs/massachusetts-buildings/model.terraseg"))
    ap.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16])
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--wait-ms", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2, help="Rounds, the servers' order swapped each round.")
    ap.add_argument("--lit-child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.lit_child:
        return lit_server(a.bundle, a.lit_child, a.max_batch, a.wait_ms)
    import statistics

    from terraseg.devices import cpu_model

    payload = png_512()
    print(
        f"{cpu_model()} x{os.cpu_count()}; 512x512 PNG, {a.duration:.0f} s per level; max batch {a.max_batch}, "
        f"wait {a.wait_ms:g} ms; {a.rounds} rounds"
    )
    print("round server     clients   n   err  p50_ms  p99_ms  req/s")
    rates: dict[tuple[str, int], list[float]] = {}
    runs = {"terraseg": _terraseg_rows, "litserve": _lit_rows}
    for r in range(a.rounds):
        for name in ["terraseg", "litserve"] if r % 2 == 0 else ["litserve", "terraseg"]:
            for c, lat, err, rate in runs[name](a, payload):
                rates.setdefault((name, c), []).append(rate)
                print(
                    f"{r + 1:5d} {name:10s} {c:7d} {len(lat):4d} {err:5d} {pct(lat, 50) * 1e3:7.0f} {pct(lat, 99) * 1e3:7.0f} "
                    f"{rate:6.2f}",
                    flush=True,
                )
    print("\nclients  terraseg_req/s  litserve_req/s  terraseg/litserve   (medians over rounds)")
    for c in a.clients:
        t, lit = statistics.median(rates[("terraseg", c)]), statistics.median(rates[("litserve", c)])
        print(f"{c:7d}  {t:14.2f}  {lit:14.2f}  {t / lit:17.3f}")


if __name__ == "__main__":
    main()
