"""Helpers of .ci/check_image.sh and .ci/check_compose.sh: write a small bundle (and a tracked run folder); check and
time the running container against the host; check the compose stack."""

from __future__ import annotations

import io
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np


def bundle(folder: Path) -> None:
    """A 2-class plain U-Net for 3-band uint8 imagery at ``folder/model.terraseg`` (readable by the container's user)."""
    import torch

    from terraseg.bundle import Bundle, BundleManifest, InputSpec
    from terraseg.config import ClassSpec, ModelConfig
    from terraseg.data.normalize import NormStats
    from terraseg.models.factory import build_model

    mc = ModelConfig(arch="plain_unet", base_filters=8, encoder_depth=3)
    torch.manual_seed(0)
    stats = NormStats("meanstd", [80.0] * 3, [40.0] * 3, [0.0] * 3, [255.0] * 3)
    m = BundleManifest(
        name="buildings",
        model=mc,
        classes=[ClassSpec(name="background"), ClassSpec(name="building", color="#ff3030")],
        input=InputSpec(bands=3, dtype="uint8", nodata=255, normalization=stats, train_window=64, predict_window=512),
    )
    path = Bundle(m, build_model(mc, 3, 2)).save(folder / "model.terraseg")
    path.chmod(0o644)


def _p50(url: str, data: bytes, n: int = 20) -> float:
    import httpx

    times = []
    with httpx.Client(timeout=120) as c:
        for _ in range(n + 2):
            t = time.perf_counter()
            r = c.post(f"{url}/v1/segment?format=png", files={"file": ("x.png", data, "image/png")})
            assert r.status_code == 200, r.text
            times.append(time.perf_counter() - t)
    return statistics.median(times[2:])  # the first two warm up


def check(folder: Path, port: int, started: float, uid: str) -> None:
    import httpx
    import rasterio
    import uvicorn
    from PIL import Image

    from terraseg.config.inference import ServeConfig
    from terraseg.serve.app import create_app
    from terraseg.settings import data_root

    url = f"http://127.0.0.1:{port}"
    _wait(f"{url}/healthz", 300, "image check")
    first_health = time.time() - started
    assert uid.strip() != "0", "the container runs as root"
    tile = data_root() / "massachusetts-buildings" / "23429155_15.tif"
    r = httpx.post(f"{url}/v1/segment?format=geotiff", files={"file": (tile.name, tile.read_bytes(), "image/tiff")}, timeout=300)
    assert r.status_code == 200 and r.headers["content-type"] == "image/tiff", r.text[:300]
    with rasterio.MemoryFile(r.content) as mf, mf.open() as out, rasterio.open(tile) as src:
        assert out.crs == src.crs and out.transform == src.transform and (out.width, out.height) == (src.width, src.height)
    page = httpx.get(f"{url}/", timeout=10).text
    leaflet = httpx.get(f"{url}/vendor/leaflet.js", timeout=10)
    assert "/vendor/leaflet.js" in page and leaflet.status_code == 200, "the page's map library is missing from the image"
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(buf, format="PNG")
    png = buf.getvalue()
    container = _p50(url, png)
    app = create_app(ServeConfig(models=[str(folder / "model.terraseg")], results_dir=str(folder / "host-results")))
    hport = port + 1
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=hport, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    host = _p50(f"http://127.0.0.1:{hport}", png)
    server.should_exit = True
    print(
        f"image check: ok: start to first /healthz {first_health:.1f} s; /v1/segment on the Massachusetts tile: GeoTIFF in "
        f"{src.crs}; uid {uid.strip()}; 512^2 PNG p50 {container * 1000:.0f} ms in the container vs {host * 1000:.0f} ms on the host"
    )


def run_folder(folder: Path) -> None:
    """A training run folder as `make demo` leaves one: ``model.terraseg`` recording a run of the folder's own
    sqlite store (``mlflow.db``), which the compose stack's tracking server does not hold."""
    import mlflow

    from terraseg.bundle import Bundle

    folder.mkdir(parents=True)
    bundle(folder)
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    mlflow.set_experiment("buildings")
    with mlflow.start_run() as r:
        mlflow.log_metric("val/score", 0.5)
    b = Bundle.load(folder / "model.terraseg")
    b.manifest.training["mlflow_run_id"] = r.info.run_id
    b.manifest.metrics["validation"] = {"val/score": 0.5}
    b.save(folder / "model.terraseg").chmod(0o644)
    folder.chmod(0o755)
    folder.parent.chmod(0o755)


def _wait(url: str, seconds: float, who: str) -> None:
    """Poll ``url`` every 0.2 s until it answers 200; exit naming ``who`` after ``seconds``."""
    import httpx

    deadline = time.time() + seconds
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            raise SystemExit(f"{who}: {url} did not answer within {seconds:.0f} s")
        time.sleep(0.2)


def compose(api_port: int, mlflow_port: int, started: float) -> None:
    """The stack is up: the API serves the model registered in the MLflow server (by alias), whose version's
    run holds the bundle in the artifact volume and whose metadata sit in Postgres; the UI answers."""
    import httpx
    import rasterio

    from terraseg.settings import data_root

    api, ml = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{mlflow_port}"
    _wait(f"{api}/readyz", 300, "compose check")
    ready = time.time() - started
    models = httpx.get(f"{api}/v1/models", timeout=10).json()
    assert [m["source"] for m in models] == ["models:/buildings@champion"], models
    tile = data_root() / "massachusetts-buildings" / "23429155_15.tif"
    r = httpx.post(f"{api}/v1/segment?format=geotiff", files={"file": (tile.name, tile.read_bytes(), "image/tiff")}, timeout=300)
    assert r.status_code == 200 and r.headers["content-type"] == "image/tiff", r.text[:300]
    with rasterio.MemoryFile(r.content) as mf, mf.open() as out, rasterio.open(tile) as src:
        assert out.crs == src.crs and out.transform == src.transform
    assert "/vendor/leaflet.js" in httpx.get(f"{api}/", timeout=10).text
    assert httpx.get(f"{ml}/", timeout=10).status_code == 200, "the MLflow UI does not answer"
    mv = httpx.get(
        f"{ml}/api/2.0/mlflow/registered-models/alias", params={"name": "buildings", "alias": "champion"}, timeout=10
    ).json()["model_version"]
    run = httpx.get(f"{ml}/api/2.0/mlflow/runs/get", params={"run_id": mv["run_id"]}, timeout=10).json()["run"]
    tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
    assert "terraseg.source_run_id" in tags, tags  # carried over from the run folder's own store
    arts = httpx.get(f"{ml}/api/2.0/mlflow/artifacts/list", params={"run_id": mv["run_id"]}, timeout=10).json()
    assert "model.terraseg" in {f["path"] for f in arts.get("files", [])}, arts
    print(
        f"compose check: ok: postgres + mlflow + register + api up, API ready {ready:.1f} s after `up`; "
        f"models:/buildings@champion = version {mv['version']} of run {mv['run_id'][:8]} (carried over from "
        f"{tags['terraseg.source_run_id'][:8]}); /v1/segment GeoTIFF in {src.crs}; MLflow UI answers"
    )


if __name__ == "__main__":
    if sys.argv[1] == "bundle":
        bundle(Path(sys.argv[2]))
    elif sys.argv[1] == "run":
        run_folder(Path(sys.argv[2]))
    elif sys.argv[1] == "compose":
        compose(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    else:
        check(Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
