"""Batch prediction on Ray: row bands with a halo equal the single-process run, retries, resume,
input lists and STAC items read over HTTP (GDAL /vsicurl/ against a local server)."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from conftest import make_bundle, make_geotiff
from terraseg import predict
from terraseg.bundle import Bundle
from terraseg.config import ModelConfig
from terraseg.data.normalize import NormStats
from terraseg.infer.inputs import expand_inputs
from terraseg.models.factory import build_model

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    """A 3-class plain U-Net for 3-band uint8 images, 64-pixel prediction windows (many strips per scene)."""
    mc = ModelConfig(arch="plain_unet", base_filters=4, encoder_depth=3)
    torch.manual_seed(0)
    model = build_model(mc, 3, 3).eval()
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():  # centre each class's logit on typical inputs: every class appears (never a constant map)
        x = (torch.from_numpy(np.random.default_rng(0).integers(0, 255, (2, 3, 64, 64))).float() - 100) / 50
        last.bias -= model(x).mean(dim=(0, 2, 3))
    stats = NormStats("meanstd", [100.0] * 3, [50.0] * 3, [0.0] * 3, [255.0] * 3)
    return make_bundle(
        classes=[f"c{i}" for i in range(3)], stats=stats, model=model, path=tmp_path_factory.mktemp("b") / "model.terraseg"
    )


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the module (starting it takes seconds); the engine joins it instead of starting its own."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False)
    yield
    ray.shutdown()


def _read(path: Path) -> tuple[np.ndarray, rasterio.Affine, object]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.transform, ds.crs


@pytest.mark.slow
def test_bands_with_halo_equal_single_process(tmp_path, bundle_path, ray_local):
    img, _, _ = make_geotiff(tmp_path / "big.tif", 300, 200, seed=4)
    from terraseg.config.inference import InferenceConfig, PredictConfig
    from terraseg.prediction.distributed import plan_units

    cfg = PredictConfig(inputs=[str(img)], out_dir=str(tmp_path), inference=InferenceConfig(window=64))
    assert len(plan_units(Bundle.load(bundle_path), cfg, [(str(img), "big")], 2)[0]) == 4  # four bands of 64-pixel windows
    opts = dict(probabilities=True, uncertainty=True, device="cpu", backend="torch", window=64)
    predict(bundle_path, [img], tmp_path / "one", **opts)
    res = predict(bundle_path, [img], tmp_path / "ray", engine="ray", ray={"num_workers": 2, "cpus_per_worker": 1}, **opts)
    assert not res.failures, res.failures
    ids1, t1, crs1 = _read(tmp_path / "one" / "big.tif")
    ids2, t2, crs2 = _read(tmp_path / "ray" / "big.tif")
    assert (ids1 == ids2).all() and t1 == t2 and crs1 == crs2
    assert len(np.unique(ids1)) > 1  # a real map, not a constant
    p1, p2 = _read(tmp_path / "one" / "big_probs.tif")[0], _read(tmp_path / "ray" / "big_probs.tif")[0]
    np.testing.assert_allclose(p1, p2, atol=1e-5)
    c1, c2 = _read(tmp_path / "one" / "big_confidence.tif")[0], _read(tmp_path / "ray" / "big_confidence.tif")[0]
    np.testing.assert_allclose(c1, c2, atol=1e-5)
    assert not (tmp_path / "ray" / ".terraseg-parts" / "big").exists()  # parts removed once assembled


def test_band_plan_covers_every_row_once(tmp_path, bundle_path):
    from terraseg.config.inference import InferenceConfig, PredictConfig
    from terraseg.prediction.distributed import plan_units

    img, _, _ = make_geotiff(tmp_path / "tall.tif", 1000, 120, seed=5)
    b = Bundle.load(bundle_path)
    cfg = PredictConfig(inputs=[str(img)], out_dir=str(tmp_path), inference=InferenceConfig(window=64))
    units, failures = plan_units(b, cfg, [(str(img), "tall")], 3)
    assert not failures and len(units) == 6 and all(u.kind == "band" for u in units)
    rows = [u.rows for u in units]
    assert rows[0][0] == 0 and rows[-1][1] == 1000 and all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
    assert sum(u.pixels for u in units) == 1000 * 120


@pytest.mark.slow
def test_many_scenes_retry_and_resume(tmp_path, bundle_path, ray_local, monkeypatch):
    (tmp_path / "in").mkdir()
    imgs = [make_geotiff(tmp_path / "in" / f"s{i}.tif", 70 + 10 * i, 90, seed=i)[0] for i in range(4)]
    (tmp_path / "in" / "bad.tif").write_bytes(b"not a tiff")
    (tmp_path / "list.txt").write_text("# scenes\n" + "\n".join(f"in/{p.name}" for p in imgs) + "\nin/bad.tif\n")
    faults = tmp_path / "faults"
    monkeypatch.setenv("TERRASEG_FAULT_ONCE", str(faults))  # the actors inherit it: every unit fails once
    res = predict(
        bundle_path,
        [tmp_path / "list.txt"],
        tmp_path / "out",
        device="cpu",
        backend="torch",
        engine="ray",
        ray={"num_workers": 2, "cpus_per_worker": 1, "max_retries": 1},
    )
    assert set(res.outputs) == {str(p) for p in imgs}
    assert list(res.failures) == [str(tmp_path / "in" / "bad.tif")] and "not a readable raster" in next(
        iter(res.failures.values())
    )
    assert len(list(faults.iterdir())) == 5  # each unit failed once and was retried
    for p in imgs:  # identical to the single-process path
        local = predict(bundle_path, [p], tmp_path / "local", device="cpu", backend="torch")
        assert (_read(Path(local.outputs[str(p)]["prediction"]))[0] == _read(tmp_path / "out" / p.name)[0]).all()
    before = {p.name: (tmp_path / "out" / p.name).stat().st_mtime_ns for p in imgs}
    again = predict(
        bundle_path,
        [tmp_path / "in"],
        tmp_path / "out",
        device="cpu",
        backend="torch",
        engine="ray",
        resume=True,
        ray={"num_workers": 2, "cpus_per_worker": 1, "max_retries": 0},
    )
    assert again.skipped == 4 and {p.name: (tmp_path / "out" / p.name).stat().st_mtime_ns for p in imgs} == before
    assert list(again.failures) == [str(tmp_path / "in" / "bad.tif")]


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP range requests (what GDAL's /vsicurl/ reads with)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not rng or not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        a, b = rng.split("=")[1].split("-")
        a, b = int(a), min(int(b) if b else len(data) - 1, len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
        self.send_header("Content-Length", str(b - a + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(data[a : b + 1])


@pytest.mark.slow
def test_stac_items_over_http(tmp_path, bundle_path, ray_local, monkeypatch):
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    served = tmp_path / "www"
    for item in ("S2A_1", "S2B_2"):  # both assets are called B.tif: outputs are named by item id
        (served / item).mkdir(parents=True)
        make_geotiff(served / item / "B.tif", 80, 96, seed=len(item))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_RangeHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        stac = {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "stac_version": "1.0.0",
                    "id": item,
                    "properties": {},
                    "assets": {
                        "thumbnail": {"href": f"{url}/{item}/thumb.png", "type": "image/png", "roles": ["thumbnail"]},
                        "visual": {"href": f"{url}/{item}/B.tif", "type": "image/tiff; application=geotiff", "roles": ["data"]},
                    },
                }
                for item in ("S2A_1", "S2B_2")
            ],
        }
        (tmp_path / "items.json").write_text(json.dumps(stac))
        items = expand_inputs([str(tmp_path / "items.json")])
        assert items == [(f"/vsicurl/{url}/S2A_1/B.tif", "S2A_1"), (f"/vsicurl/{url}/S2B_2/B.tif", "S2B_2")]
        res = predict(
            bundle_path,
            [tmp_path / "items.json"],
            tmp_path / "out",
            device="cpu",
            backend="torch",
            engine="ray",
            ray={"num_workers": 1, "cpus_per_worker": 1},
        )
        assert not res.failures, res.failures
        for item in ("S2A_1", "S2B_2"):
            ids, transform, crs = _read(tmp_path / "out" / f"{item}.tif")
            with rasterio.open(served / item / "B.tif") as src:
                assert ids.shape[1:] == (src.height, src.width) and transform == src.transform and crs == src.crs
    finally:
        server.shutdown()


@pytest.mark.slow
def test_serve_engine_ray_matches_local(tmp_path, bundle_path, ray_local):
    """The gateway + Ray Serve deployment answers as the single-process server does, and reports its replica."""
    from fastapi.testclient import TestClient
    from ray import serve

    from terraseg.config.inference import RayConfig, ServeConfig
    from terraseg.serve.app import create_app

    img, _, _ = make_geotiff(tmp_path / "up.tif", 150, 170, seed=9)
    data = img.read_bytes()
    local = TestClient(
        create_app(ServeConfig(models=[str(bundle_path)], inference={"device": "cpu", "backend": "torch", "window": 64}))
    )
    cfg = ServeConfig(
        models=[str(bundle_path)],
        inference={"device": "cpu", "backend": "torch", "window": 64},
        engine="ray",
        ray=RayConfig(replicas=1, cpus_per_worker=1),
    )
    try:
        remote = TestClient(create_app(cfg))
        info = remote.get("/v1/models").json()[0]
        assert info["backend"] == "ray-serve:torch"
        a = local.post("/v1/segment?format=json", files={"file": ("up.tif", data)}).json()
        b = remote.post("/v1/segment?format=json", files={"file": ("up.tif", data)}).json()
        assert a["mask"] == b["mask"] and len({v for row in a["mask"] for v in row}) > 1
        bad = remote.post("/v1/segment?format=json", files={"file": ("x.tif", b"not an image")})
        assert bad.status_code == 415 and "x.tif" in bad.json()["error"]  # the gateway still refuses a bad upload in one sentence
    finally:
        serve.shutdown()
