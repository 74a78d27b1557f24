"""Helpers of .ci/check_image.sh: write a small bundle; check and time the running container against the host."""

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
    m = BundleManifest(name="buildings", model=mc, classes=[ClassSpec(name="background"), ClassSpec(name="building", color="#ff3030")],
                       input=InputSpec(bands=3, dtype="uint8", nodata=255, normalization=stats, train_window=64, predict_window=512))
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
    deadline = time.time() + 300
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            raise SystemExit("image check: /healthz did not answer within 300 s")
        time.sleep(0.2)
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
    print(f"image check: ok: start to first /healthz {first_health:.1f} s; /v1/segment on the Massachusetts tile: GeoTIFF in "
          f"{src.crs}; uid {uid.strip()}; 512^2 PNG p50 {container * 1000:.0f} ms in the container vs {host * 1000:.0f} ms on the host")


if __name__ == "__main__":
    if sys.argv[1] == "bundle":
        bundle(Path(sys.argv[2]))
    else:
        check(Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
