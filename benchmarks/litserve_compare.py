"""`terraseg serve` against a LitServe server (Lightning AI's serving library) doing the same work, on one machine.

Both decode a 512x512 PNG upload, predict it with the same bundle and the same predictor (``auto`` backend,
terraseg.infer.sliding.predictor_for) and answer the class map as a colour PNG. LitServe batches requests
itself (``max_batch_size``, ``batch_timeout``) and runs the model in a worker process fed by queues;
terraseg batches windows in its own thread (``--batch-wait-ms``, ``--max-batch``). The load generator is
serve_bench's (httpx async clients for ``--duration`` seconds at each client count). terraseg's hardening
(upload limits, time budget, queue limit, JSON errors) is not rebuilt in the LitServe server: it is the
speed of the serving core that is compared.

Usage::

    pip install litserve
    .venv/bin/python benchmarks/litserve_compare.py [--bundle runs/massachusetts-buildings/model.terraseg]
        [--clients 1 4 16] [--duration 15] [--max-batch 16] [--wait-ms 5]
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
from serve_bench import ROOT, Server, free_port, load, pct, png_512  # noqa: E402


import litserve as ls  # noqa: E402


class SegmentAPI(ls.LitAPI):
    """The same work as ``/v1/segment?format=png``: decode, predict (terraseg's predictor), a colour PNG back."""

    def setup(self, device):
        from terraseg.bundle import Bundle
        from terraseg.config.inference import InferenceConfig
        from terraseg.infer.sliding import predictor_for

        self.bundle = Bundle.load(os.environ["LIT_BUNDLE"])
        self.pred = predictor_for(self.bundle, InferenceConfig())
        self.colors = [c.color for c in self.bundle.manifest.classes]
        self.tmp = Path(tempfile.mkdtemp(prefix="lit-"))

    def decode_request(self, request):
        from terraseg.data.sources import scene_from_path

        upload = request["file"]
        data = upload.file.read() if hasattr(upload, "file") else upload
        path = self.tmp / f"{os.getpid()}-{time.monotonic_ns()}.png"
        path.write_bytes(data)
        return scene_from_path(path, ignore_index=self.bundle.manifest.ignore_index)

    def predict(self, x):
        if isinstance(x, list):
            return [ids for ids, _ in self.pred.predict_batch(x)]
        return self.pred.predict_array(x, probabilities=False)[0]

    def encode_response(self, ids):
        from fastapi import Response
        from PIL import Image

        from terraseg.io.render import colorize

        buf = io.BytesIO()
        Image.fromarray(np.moveaxis(colorize(np.maximum(np.squeeze(np.asarray(ids)), 0), self.colors), 0, -1)).save(buf, format="PNG")
        return Response(content=buf.getvalue(), media_type="image/png")


def lit_server(bundle: str, port: int, max_batch: int, wait_ms: float) -> None:
    """Run the LitServe server (in a child process)."""
    os.environ["LIT_BUNDLE"] = bundle
    api = SegmentAPI(max_batch_size=max_batch, batch_timeout=wait_ms / 1000.0, api_path="/v1/segment")
    ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=120).run(port=port, log_level="warning")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(ROOT / "runs/massachusetts-buildings/model.terraseg"))
    ap.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16])
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--wait-ms", type=float, default=5.0)
    ap.add_argument("--lit-child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.lit_child:
        return lit_server(a.bundle, a.lit_child, a.max_batch, a.wait_ms)
    from terraseg.devices import cpu_model

    payload = png_512()
    print(f"{cpu_model()} x{os.cpu_count()}; 512x512 PNG, {a.duration:.0f} s per level; max batch {a.max_batch}, wait {a.wait_ms:g} ms")
    print("server     clients   n   err  p50_ms  p99_ms  req/s")
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--bundle", a.bundle, "--lit-child", str(port), "--max-batch",
                             str(a.max_batch), "--wait-ms", str(a.wait_ms)], start_new_session=True)
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
        asyncio.run(load(url, payload, 2, 3))
        for c in a.clients:
            lat, err, wall = asyncio.run(load(url, payload, c, a.duration))
            print(f"litserve   {c:7d} {len(lat):4d} {sum(err.values()):5d} {pct(lat, 50) * 1e3:7.0f} {pct(lat, 99) * 1e3:7.0f} "
                  f"{len(lat) / wall:6.2f}", flush=True)
    finally:  # LitServe's inference workers are processes of their own: end the whole group, or they keep polling
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(2)
    srv = Server(Path(a.bundle), "auto", ["--batch-wait-ms", str(a.wait_ms), "--max-batch", str(a.max_batch)])
    try:
        asyncio.run(load(srv.url, payload, 2, 3))
        for c in a.clients:
            lat, err, wall = asyncio.run(load(srv.url, payload, c, a.duration))
            print(f"terraseg   {c:7d} {len(lat):4d} {sum(err.values()):5d} {pct(lat, 50) * 1e3:7.0f} {pct(lat, 99) * 1e3:7.0f} "
                  f"{len(lat) / wall:6.2f}", flush=True)
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
