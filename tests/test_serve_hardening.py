"""Serving hardening: API key on every data route, wrong-key throttling, body limits while streaming,
request time budget and queue limit, result ownership and retention, headers, error shape, schema."""

from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import make_bundle
from terraseg.bundle import Bundle
from terraseg.config.inference import ServeConfig
from terraseg.data.normalize import NormStats
from terraseg.serve.app import create_app
from terraseg.serve.errors import ServerBusy
from terraseg.serve.registry import load_models


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    stats = NormStats("meanstd", [80.0] * 3, [40.0] * 3, [0.0] * 3, [255.0] * 3)
    return make_bundle(
        classes=("background", "building"),
        stats=stats,
        base_filters=8,
        name="buildings",
        path=tmp_path_factory.mktemp("b") / "model.terraseg",
    )


def _png(h=64, w=80) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _app(bundle_path, tmp_path, **kw):
    cfg = ServeConfig(models=[str(bundle_path)], results_dir=str(tmp_path / "res"), **kw)
    return create_app(cfg, load_models([str(bundle_path)]))


def test_api_key_guards_page_jobs_and_session_cookie(bundle_path, tmp_path):
    c = TestClient(_app(bundle_path, tmp_path, api_key="s3cret"))
    files = {"file": ("a.png", _png())}
    assert c.post("/ui/jobs", files=files).status_code == 401  # the page's job endpoint runs the model: key required
    assert c.post("/v1/segment", files=files).status_code == 401
    assert c.post("/ui/session", data={"key": "nope"}).status_code == 401
    r = c.post("/ui/session", data={"key": "s3cret"})
    assert r.status_code == 200 and "terraseg_session" in r.cookies
    job = c.post("/ui/jobs", files=files)  # the cookie now stands for the key
    assert job.status_code == 200, job.text
    jid = job.json()["id"]
    assert c.get(f"/ui/jobs/{jid}").status_code == 200 and c.get(f"/ui/jobs/{jid}/prediction.png").status_code == 200
    other = TestClient(c.app)
    assert other.get(f"/ui/jobs/{jid}/prediction.png", headers={"X-API-Key": "s3cret"}).status_code == 404  # not its result
    forged = TestClient(c.app, cookies={"terraseg_session": "abc.def"})
    assert forged.get("/v1/models").status_code == 401


def test_wrong_keys_are_throttled(bundle_path, tmp_path):
    c = TestClient(_app(bundle_path, tmp_path, api_key="s3cret"))
    codes = [c.get("/v1/models", headers={"X-API-Key": f"guess{i}"}).status_code for i in range(12)]
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]
    r = c.get("/v1/models", headers={"X-API-Key": "s3cret"})  # the right key too, for the rest of the window
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "error" in r.json()


def test_body_over_limit_refused_before_and_while_streaming(bundle_path, tmp_path):
    c = TestClient(_app(bundle_path, tmp_path, max_upload_mb=0.5))
    big = b"\0" * 2_500_000  # over 2 x 0.5 MB + 1 MB of framing
    r = c.post("/v1/segment", content=big, headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "larger than the limit" in r.json()["error"]

    def chunks():  # no Content-Length: a valid multipart start, then a file that never ends; counted while streaming
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
        for _ in range(30):
            yield b"\0" * 100_000

    r = c.post("/v1/segment", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413
    assert c.post("/v1/segment", files={"file": ("a.png", _png())}).status_code == 200  # under the limit: served


def test_time_budget_and_queue_limit(bundle_path, tmp_path):
    models = load_models([str(bundle_path)])
    model = models["buildings"]
    assert model.seconds_per_window is not None and model.seconds_per_window > 0  # measured at start-up
    c = TestClient(create_app(ServeConfig(models=[str(bundle_path)], max_seconds=5, max_queue=2), models))
    model.seconds_per_window = 1.0  # 64-px windows over 1200 x 1200 (over fit_max: tiled): hundreds of seconds
    r = c.post("/v1/segment", files={"file": ("big.png", _png(1200, 1200))})
    assert r.status_code == 413 and "would take about" in r.json()["error"] and "--max-seconds" in r.json()["error"]
    model.seconds_per_window = 1e-4
    assert c.post("/v1/segment", files={"file": ("a.png", _png())}).status_code == 200
    model._pending = model.max_queue  # as if two requests were waiting or running
    r = c.post("/v1/segment", files={"file": ("a.png", _png())})
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1 and "queued" in r.json()["error"]
    with pytest.raises(ServerBusy):
        model.run(lambda: None)
    model._pending = 0
    assert model.run(lambda: 7) == 7


def test_results_expire_and_temp_results_removed_at_shutdown(bundle_path, tmp_path):
    app = _app(bundle_path, tmp_path, results_ttl_minutes=1)
    with TestClient(app) as c:
        first = c.post("/ui/jobs", files={"file": ("a.png", _png())}).json()["id"]
        old = tmp_path / "res" / first
        os.utime(old, (time.time() - 120, time.time() - 120))
        c.post("/ui/jobs", files={"file": ("b.png", _png())})
        assert not old.exists() and c.get(f"/ui/jobs/{first}").status_code == 404
    cfg = ServeConfig(models=[str(bundle_path)])  # no results_dir: a temporary folder, removed at shutdown
    app = create_app(cfg, load_models([str(bundle_path)]))
    with TestClient(app) as c:
        c.post("/ui/jobs", files={"file": ("a.png", _png())})
        folders = [
            p
            for p in __import__("pathlib").Path(__import__("tempfile").gettempdir()).glob("terraseg-results-*")
            if any(p.iterdir())
        ]
        assert folders
    assert not any(p.exists() for p in folders)


def test_headers_error_shape_schema_and_no_paths(bundle_path, tmp_path):
    c = TestClient(_app(bundle_path, tmp_path))
    for url in ("/", "/v1/models", "/nope"):
        r = c.get(url)
        assert (
            r.headers["x-content-type-options"] == "nosniff" and "frame-ancestors 'none'" in r.headers["content-security-policy"]
        )
        assert r.headers["x-frame-options"] == "DENY"
    assert c.get("/nope").json() == {"error": "Not Found"}
    assert set(c.delete("/v1/models").json()) == {"error"}  # 405 in the same shape
    models = c.get("/v1/models").json()
    assert models[0]["source"] == "model.terraseg" and str(bundle_path.parent) not in str(models)
    spec = c.get("/openapi.json").json()
    codes = set(spec["paths"]["/v1/segment"]["post"]["responses"])
    assert {"200", "400", "401", "404", "413", "415", "422", "429", "500", "503"} <= codes


@pytest.mark.parametrize("member", ["manifest.json", "weights.safetensors"])
def test_zip_bomb_bundle_refused_before_reading(bundle_path, tmp_path, member):
    import zipfile

    from terraseg.errors import BundleError

    bomb = tmp_path / "bomb.terraseg"
    with zipfile.ZipFile(bundle_path) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename != member:
                dst.writestr(info.filename, src.read(info.filename))
        dst.writestr(member, b"\0" * (40 * 2**20))  # 40 MB of zeros: about 40 kB stored
    assert bomb.stat().st_size < 2**20
    with pytest.raises(BundleError, match="zip bomb"):
        Bundle.load(bomb)


def test_server_survives_clients_disconnecting_mid_upload(bundle_path, tmp_path):
    import socket
    import threading

    import httpx
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app(bundle_path, tmp_path), host="127.0.0.1", port=port, log_level="error"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        head = (
            b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b'Content-Length: 5000000\r\n\r\n--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        )
        for _ in range(5):  # five clients that send part of a body and vanish
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall(head + b"\x89PNG" + b"\0" * 100_000)
            c.close()
        time.sleep(0.3)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            r = client.post("/v1/segment", files={"file": ("a.png", _png())})
            assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
        assert not list((tmp_path / "res").glob("*/input*"))  # nothing of the aborted uploads kept
    finally:
        server.should_exit = True
        t.join(10)


def test_input_drift_flagged_in_api_metrics_and_cli(tmp_path):
    """an input unlike the training data (values x4) is flagged: API header + JSON, /metrics counter, CLI warning."""
    from typer.testing import CliRunner

    from conftest import make_geotiff
    from terraseg.cli.main import app as cli
    from terraseg.data.rasters import RasterScene
    from terraseg.infer.drift import input_drift

    stats = NormStats("meanstd", [60.0] * 3, [30.0] * 3, [10.0] * 3, [140.0] * 3)
    bundle = make_bundle(stats=stats, name="d", path=tmp_path / "d.terraseg")
    like = Image.fromarray(np.random.default_rng(0).normal(60, 30, (64, 64, 3)).clip(0, 255).astype(np.uint8))
    unlike = Image.fromarray(np.full((64, 64, 3), 250, np.uint8))
    c = TestClient(create_app(ServeConfig(models=[str(bundle)], results_dir=str(tmp_path / "res"))))
    for img, flagged in ((like, "none"), (unlike, "B1,B2,B3")):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        r = c.post("/v1/segment", params={"format": "json"}, files={"file": ("x.png", buf.getvalue())})
        assert r.status_code == 200 and r.headers["x-terraseg-drift"] == flagged
        assert r.json()["drift"]["drifted"] is (flagged != "none")
    metrics = c.get("/metrics").text
    assert (
        'terraseg_drift_total{model="d"} 1.0' in metrics
        and 'terraseg_requests_total{route="/v1/segment",status="200"} 2.0' in metrics
    )
    tif, _, _ = make_geotiff(tmp_path / "bright.tif", 80, 80, dtype="uint16", seed=3)
    with __import__("rasterio").open(tif, "r+") as ds:
        ds.write((ds.read() * 0 + 2000).astype("uint16"))
    report = input_drift(RasterScene(tif), stats)
    assert report.drifted and report.smd[0] > 10 and report.out_of_range[0] == 1.0
    r = CliRunner().invoke(cli, ["predict", str(bundle), str(tif), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "uint16 pixels" in r.output and "--input-range" in r.output  # another bit depth: refused
    bright, _, _ = make_geotiff(tmp_path / "bright8.tif", 80, 80, seed=3)
    with __import__("rasterio").open(bright, "r+") as ds:
        ds.write((ds.read() * 0 + 250).astype("uint8"))
    r = CliRunner().invoke(cli, ["predict", str(bundle), str(bright), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0 and "differs from the training data" in r.output
