"""ONNX export and backend, and the REST API + web page against the real app (httpx TestClient)."""

from __future__ import annotations

import io
import json
import shutil
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from fastapi.testclient import TestClient
from PIL import Image

from conftest import CHROMIUM, DATA, NO_CHROMIUM, make_bundle, needs_data
from terraseg.bundle import Bundle
from terraseg.config import ClassSpec, ModelConfig
from terraseg.config.inference import InferenceConfig, ServeConfig
from terraseg.data.normalize import NormStats
from terraseg.errors import BundleError
from terraseg.infer.sliding import predictor_for
from terraseg.models.factory import build_model
from terraseg.prediction.export import export_onnx
from terraseg.serve.app import create_app
from terraseg.serve.registry import load_models

LEAFLET = Path(__file__).resolve().parents[1] / "node_modules" / "leaflet" / "dist" / "leaflet.js"
MB_TILE = DATA / "massachusetts-buildings" / "23429155_15.tif"


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    """A small binary U-Net bundle for 3-band uint8 imagery, with an ONNX graph checked on real chips."""
    mc = ModelConfig(arch="plain_unet", base_filters=8, encoder_depth=3)
    torch.manual_seed(0)
    model = build_model(mc, 3, 2).eval()
    # centre the output logit on typical inputs, so about half the pixels come out as buildings (never an empty map)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        x = (torch.from_numpy(np.random.default_rng(0).integers(0, 255, (2, 3, 64, 64))).float() - 80) / 40
        last.bias -= model(x).median()
    stats = NormStats("meanstd", [80.0] * 3, [40.0] * 3, [0.0] * 3, [255.0] * 3)
    path = make_bundle(
        classes=[ClassSpec(name="background"), ClassSpec(name="building", color="#ff3030")],
        stats=stats,
        model=model,
        base_filters=8,
        name="buildings",
        nodata=255,
        path=tmp_path_factory.mktemp("b") / "model.terraseg",
    )
    check = [str(MB_TILE)] if MB_TILE.exists() else []
    rep = export_onnx(path, check_images=check, window=128)
    assert rep.max_abs_diff < 1e-4  # ONNX Runtime vs PyTorch on real chips
    return path


@pytest.mark.integration  # bundle_path checks the export on a real Massachusetts tile
def test_export_records_contract_and_backends_agree(bundle_path, tmp_path):
    b = Bundle.load(bundle_path)
    onnx = b.manifest.exports["onnx"]
    assert onnx["opset"] >= 17 and onnx["max_abs_diff"] < 1e-4 and "normalised" in onnx["input"]
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (3, 150, 170), dtype=np.uint8)  # odd size: dynamic height/width, padded windows
    from terraseg.data.scenes import ArrayScene

    p = tmp_path / "x.png"
    Image.fromarray(np.moveaxis(img, 0, -1)).save(p)
    scene = ArrayScene(p)
    ids_t, pr_t = predictor_for(b, window=64, overlap=0.25, batch_size=3).predict_array(scene)
    ids_o, pr_o = predictor_for(b, window=64, overlap=0.25, batch_size=3, backend="onnx").predict_array(scene)
    assert np.abs(pr_t - pr_o).max() < 1e-4 and (ids_t != ids_o).mean() < 1e-3
    plain = tmp_path / "plain.terraseg"
    shutil.copy(bundle_path, plain)
    b2 = Bundle.load(plain)
    b2.extras.clear()
    b2.save(plain)
    # --backend onnx on a bundle without a graph: one exported on demand into the cache (the bundle file unchanged)
    ids_d, _ = predictor_for(Bundle.load(plain), window=64, overlap=0.25, batch_size=3, backend="onnx").predict_array(scene)
    assert (ids_d != ids_t).mean() < 1e-3 and "model.onnx" not in Bundle.load(plain).extras
    with pytest.raises(BundleError, match="no INT8 ONNX graph"):
        predictor_for(Bundle.load(plain), backend="onnx-int8")


@pytest.fixture(scope="module")
def client(bundle_path, tmp_path_factory):
    cfg = ServeConfig(
        models=[str(bundle_path)], max_upload_mb=8, max_pixels=4_000_000, results_dir=str(tmp_path_factory.mktemp("res"))
    )
    models = load_models([str(bundle_path)]) | {
        "buildings-onnx": load_models([str(bundle_path)], InferenceConfig(backend="onnx"))["buildings"]
    }
    models["buildings-onnx"].name = "buildings-onnx"
    return TestClient(create_app(cfg, models))


def _png_bytes(h=64, w=80, bands=3):
    a = np.random.default_rng(1).integers(0, 255, (h, w, bands), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a if bands > 1 else a[..., 0]).save(buf, format="PNG")
    return buf.getvalue()


def test_health_models_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["ready"] is True
    models = client.get("/v1/models").json()
    assert {m["name"] for m in models} == {"buildings", "buildings-onnx"}
    m = models[0]
    assert m["task"] == "segmentation" and m["bands"] == 3 and [c["name"] for c in m["classes"]] == ["background", "building"]
    b = m["batching"]  # the pass cap measured at start-up: a pixel count of whole windows, or none
    assert b["wait_ms"] == 5.0 and b["max_windows"] == 16 and (b["max_pixels"] is None or b["max_pixels"] % b["window"] ** 2 == 0)
    spec = client.get("/openapi.json").json()
    assert "/v1/segment" in spec["paths"] and "example" in json.dumps(spec["paths"]["/v1/segment"])


@needs_data("massachusetts-buildings")
@pytest.mark.parametrize("model", ["buildings", "buildings-onnx"])
def test_segment_real_geotiff_all_formats(client, model):
    data = MB_TILE.read_bytes()
    r = client.post(f"/v1/segment?format=geotiff&model={model}", files={"file": ("23429155_15.tif", data, "image/tiff")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/tiff"
    with rasterio.MemoryFile(r.content) as mf, mf.open() as out, rasterio.open(MB_TILE) as src:
        assert out.crs == src.crs and out.transform == src.transform and (out.width, out.height) == (src.width, src.height)
        ids = out.read(1)
        nodata_in = (src.read() == 255).all(axis=0)
        assert ((ids == 255) == nodata_in).all()  # nodata pixels stay nodata
    r = client.post(f"/v1/segment?format=json&model={model}", files={"file": ("t.tif", data)})
    body = r.json()
    assert (
        body["width"] == 1046
        and body["height"] == 751
        and np.array_equal(np.where(np.array(body["mask"]) < 0, 255, body["mask"]), ids)
    )
    r = client.post(f"/v1/segment?format=png&model={model}", files={"file": ("t.tif", data)})
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), ids)
    r = client.post(f"/v1/segment?format=geojson&model={model}", files={"file": ("t.tif", data)})
    gj = r.json()
    assert r.status_code == 200 and gj["type"] == "FeatureCollection"
    # every predicted (non-background, non-nodata) pixel is in exactly one polygon, in the input's CRS
    assert sum(f["properties"]["pixels"] for f in gj["features"]) == int(((ids > 0) & (ids != 255)).sum())
    assert gj["features"], "the test model predicts buildings on this tile"
    x, y = gj["features"][0]["geometry"]["coordinates"][0][0]
    left, bottom, right, top = rasterio.open(MB_TILE).bounds
    assert left <= x <= right and bottom <= y <= top  # coordinates in EPSG:26986 metres, not degrees


def test_segment_png_and_jpeg(client):
    r = client.post("/v1/segment?format=json", files={"file": ("a.png", _png_bytes())})
    assert r.status_code == 200 and np.array(r.json()["mask"]).shape == (64, 80)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(buf, format="JPEG")
    r = client.post("/v1/segment", files={"file": ("a.jpg", buf.getvalue())})
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (50, 40)


def _bomb_png(w=100_000, h=100_000) -> bytes:
    """A tiny PNG whose header claims w x h pixels."""

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "name,payload,status,words",
    [
        ("junk.tif", b"this is not an image", 415, "not a readable GeoTIFF"),
        ("junk.png", b"\x00\x01garbage", 415, "not a readable PNG"),
        ("empty.png", b"", 400, "empty"),
        ("../../x.tif", b"abc", 400, "without a path"),
        ("bomb.png", None, 413, "pixels"),
        ("big.tif", b"\0" * 9_000_000, 413, "upload limit"),
        ("doc.pdf", b"%PDF-1.4", 415, "unsupported file type"),
        ("two.png", "2band", 422, "but the model expects 3"),
    ],
)
def test_bad_uploads_are_4xx_with_json(client, name, payload, status, words):
    if payload is None:
        payload = _bomb_png()
    elif payload == "2band":
        buf = io.BytesIO()
        Image.fromarray(np.zeros((30, 30, 2), np.uint8), mode="LA").save(buf, format="PNG")
        payload = buf.getvalue()
    r = client.post("/v1/segment", files={"file": (name, payload)})
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


@needs_data("bad-inputs", "corrupt.tif")
def test_corrupt_geotiff_unknown_model_bad_format(client):
    r = client.post("/v1/segment", files={"file": ("corrupt.tif", (DATA / "bad-inputs" / "corrupt.tif").read_bytes())})
    assert r.status_code == 422 and "corrupt.tif" in r.json()["error"] and "corrupt" in r.json()["error"]
    r = client.post("/v1/segment?model=nope", files={"file": ("a.png", _png_bytes())})
    assert r.status_code == 404 and "unknown model 'nope'" in r.json()["error"]
    r = client.post("/v1/segment?format=bmp", files={"file": ("a.png", _png_bytes())})
    assert r.status_code == 422 and "format" in r.json()["error"]
    r = client.post("/v1/classify", files={"file": ("a.png", _png_bytes())})
    assert r.status_code == 422 and "/v1/segment" in r.json()["error"]
    assert client.get("/healthz").status_code == 200  # still alive


@pytest.mark.integration  # bundle_path checks the export on a real Massachusetts tile
def test_api_key(bundle_path):
    c = TestClient(create_app(ServeConfig(models=[str(bundle_path)], api_key="s3cret")))
    assert c.get("/v1/models").status_code == 401
    assert c.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert c.get("/healthz").status_code == 200


@needs_data("massachusetts-buildings")
def test_web_job_with_vector_truth(client):
    r = client.post(
        "/ui/jobs",
        files={
            "file": ("tile.tif", MB_TILE.read_bytes()),
            "truth": ("b.zip", (DATA / "massachusetts-buildings" / "massachusetts_buildings.zip").read_bytes()),
        },
    )
    assert r.status_code == 200, r.text
    job = r.json()
    (s, w), (n, e) = job["bounds"]
    assert 42.4 < s < n < 42.6 and -71.2 < w < e < -71.0  # Massachusetts, at its true location
    assert job["truth"]["kind"] == "geojson" and set(job["files"]) >= {
        "image",
        "prediction",
        "overlay",
        "classes",
        "regions",
        "confidence",
    }
    assert client.get(f"/ui/jobs/{job['id']}/prediction.png").status_code == 200
    conf = np.asarray(Image.open(io.BytesIO(client.get(f"/ui/jobs/{job['id']}/confidence.png").content)))
    assert conf.shape == (751, 1046, 4) and conf[..., 3].min() < conf[..., 3].max()
    top = 1 - (conf[..., 3] / 230.0) ** 2 / 2  # the layer's opacity encodes the max probability (two classes)
    assert abs(top.mean() - job["mean_confidence"]) < 0.01 and 0.5 <= job["mean_confidence"] <= 1.0
    assert client.get(f"/ui/jobs/{job['id']}").json()["id"] == job["id"]
    assert client.get(f"/ui/jobs/{job['id']}/..%2Fjob.json").status_code in (400, 404)
    page = client.get("/").text
    assert "leaflet.js" in page and "opacity" in page


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_data("massachusetts-buildings")
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
@pytest.mark.skipif(not LEAFLET.exists(), reason="leaflet not installed (npm ci, run by make install)")
def test_browser_upload_shows_overlay_and_map(bundle_path, tmp_path):
    import uvicorn
    from playwright.sync_api import sync_playwright

    app = create_app(ServeConfig(models=[str(bundle_path)], results_dir=str(tmp_path / "res")))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.set_input_files("#file", str(MB_TILE))
            page.set_input_files("#truth", str(DATA / "massachusetts-buildings" / "massachusetts_buildings.zip"))
            page.click("#submit")
            page.wait_for_selector("body[data-state=done]", timeout=120_000)
            assert page.locator("#img-prediction").evaluate("img => img.complete && img.naturalWidth") == 1046
            assert page.locator("#legend li").count() == 2
            layers = page.evaluate("window.terrasegLayers")
            assert layers == ["image", "prediction", "uncertainty", "ground truth"]
            assert page.locator(".leaflet-image-layer").count() == 2 and page.locator("path.leaflet-interactive").count() > 10
            page.fill("#opacity", "0.3")
            page.dispatch_event("#opacity", "input")
            assert page.locator("#img-prediction").evaluate("img => img.style.opacity") == "0.3"
            shot = tmp_path / "result.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000 and "/result/" in page.url
            browser.close()
    finally:
        server.should_exit = True
        t.join(10)


def test_side_work_runs_beside_a_network_elsewhere_and_before_one_on_the_cpu():
    """The drift check overlaps a GPU's (or Ray's) forward; on the CPU it runs first (the network uses every core)."""
    import threading
    from types import SimpleNamespace

    import torch

    from terraseg.serve.registry import ServedModel

    for device, remote, overlaps in (("cpu", False, False), ("cuda", False, True), ("cpu", True, True)):
        started = threading.Event()
        model = ServedModel(
            "m",
            "m.terraseg",
            None,
            None,
            SimpleNamespace(device=torch.device(device)),
            "torch",  # type: ignore[arg-type]
            remote=remote,
        )  # remote: Ray Serve replicas, whatever the gateway's device

        def network():
            started.set()
            return "ids"

        result, seen = model.run_beside(network, (), lambda: started.wait(1))
        assert result == "ids" and seen is overlaps and model._pending == 0
