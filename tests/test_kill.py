"""Kill tests: SIGKILL part-way leaves no complete-looking output; a killed training resumes.

Each command runs in a child process on generated data large enough to take a few seconds; it is
killed with SIGKILL (no cleanup handler can run) as soon as its first temporary output appears.
Temporary outputs are hidden (``.name.part.tif``, ``.chip-*/``, ``.staging-*/``), so afterwards no
file under a final name may exist, and inputs that are rewritten in place (a bundle given to
``export``) must still load as they were.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from rasterio.transform import from_origin

from conftest import make_bundle, make_geotiff, tiny_config, write_mask_tif
from terraseg.bundle import Bundle

ENV = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _big_tif(path: Path, size: int = 3000, bands: int = 3) -> Path:
    rng = np.random.default_rng(0)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=bands,
        dtype="uint8",
        crs="EPSG:32618",
        transform=from_origin(500000, 4500000, 1, 1),
        tiled=True,
        compress="deflate",
    ) as d:
        for r in range(0, size, 500):
            d.write(
                rng.integers(0, 255, (bands, min(500, size - r), size), dtype=np.uint8),
                window=((r, min(r + 500, size)), (0, size)),
            )
    return path


def _kill_when(cmd: list[str], appears, timeout: float = 120, may_finish: bool = False) -> None:
    """Start ``cmd``; SIGKILL it once ``appears()`` is true (its first temporary output).

    ``may_finish``: a command whose temporary output lives only a moment (export) may end before the
    poll sees it; its result is then checked as a finished one."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "terraseg", "--quiet", *cmd], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    t0 = time.time()
    try:
        while not appears():
            if proc.poll() is not None:
                if may_finish and proc.returncode == 0:
                    return
                pytest.fail(f"finished before it could be killed: {proc.stdout.read().decode()[-2000:]}")
            if time.time() - t0 > timeout:
                pytest.fail("no temporary output appeared")
            time.sleep(0.05)
        time.sleep(0.3)  # well inside the work
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    d = tmp_path_factory.mktemp("kill")
    make_bundle(base_filters=8, name="k", path=d / "k.terraseg")
    return {"dir": d, "tif": _big_tif(d / "scene.tif"), "bundle": d / "k.terraseg"}


@pytest.mark.slow
def test_sigkill_predict_leaves_no_output(big, tmp_path):
    out = tmp_path / "pred"
    _kill_when(
        ["predict", big["bundle"], big["tif"], "--out", out, "--window", "64", "--device", "cpu"],
        lambda: out.exists() and any(p.name.startswith(".") for p in out.iterdir()),
    )
    assert _visible(out) == []


def test_sigkill_chip_and_mosaic_leave_no_output(big, tmp_path):
    out = tmp_path / "chips"
    _kill_when(
        ["chip", big["tif"], "--out", out, "--size", "64"],
        lambda: out.exists() and any(p.name.startswith(".chip-") and any(p.rglob("*.tif")) for p in out.iterdir()),
    )
    assert _visible(out) == []  # no chip, no index under a final name
    m = tmp_path / "m"
    m.mkdir()
    _kill_when(
        ["mosaic", big["tif"], "--out", m / "mosaic.tif", "--resolution", "0.5"],
        lambda: any(p.name.startswith(".") for p in m.iterdir()),
    )
    assert _visible(m) == []


@pytest.mark.slow
def test_sigkill_export_keeps_the_bundle_loadable(big, tmp_path):
    import shutil

    b = tmp_path / "k.terraseg"
    shutil.copy(big["bundle"], b)
    before = b.read_bytes()
    _kill_when(
        ["export", b, "--check", big["tif"], "--window", "512"],
        lambda: any(p.name.startswith(".k.") for p in tmp_path.iterdir()),
        may_finish=True,
    )
    loaded = Bundle.load(b)  # either the original, untouched, or the complete new bundle: never half of one
    assert b.read_bytes() == before or "model.onnx" in loaded.extras
    assert loaded.manifest.name == "k" and not [
        p for p in tmp_path.iterdir() if p.name.startswith(".k.") and p.suffix != ".terraseg"
    ]


@pytest.mark.slow
def test_sigkill_training_then_resume_matches_an_uninterrupted_run(tmp_path):
    img, _, truth = make_geotiff(tmp_path / "train.tif", 160, 160, seed=1)
    timg, _, ttruth = make_geotiff(tmp_path / "test.tif", 100, 100, seed=2)
    files = {
        "image": img,
        "mask": write_mask_tif(tmp_path / "m.tif", truth, img),
        "test_image": timg,
        "test_mask": write_mask_tif(tmp_path / "tm.tif", ttruth, timg),
    }
    results = {}
    for name in ("straight", "killed"):
        cfg = tiny_config(tmp_path / name, files)
        cfg["train"] |= {"max_epochs": 3, "patience": 100, "export_onnx": False}
        cfg["data"] |= {"samples_per_epoch": 32}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        ckpt = tmp_path / name / "run" / "checkpoints" / "last.ckpt"
        if name == "killed":
            _kill_when(
                ["train", path], lambda: ckpt.exists() and torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"] >= 2
            )
            assert not (tmp_path / name / "run" / "model.terraseg").exists()
            cmd = ["train", path, "--resume"]
        else:
            cmd = ["train", path]
        r = subprocess.run([sys.executable, "-m", "terraseg", "--quiet", *map(str, cmd)], env=ENV, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        results[name] = Bundle.load(tmp_path / name / "run" / "model.terraseg").manifest
    a, b = results["straight"], results["killed"]
    assert a.training["epochs"] == b.training["epochs"] == 3
    sa, sb = a.metrics["validation"]["val/score"], b.metrics["validation"]["val/score"]
    assert abs(sa - sb) < 0.05, (sa, sb)  # within noise of the uninterrupted run
    assert len(b.metrics["history"]) == 3  # the resumed run kept the killed run's history
    print(json.dumps({"straight": sa, "resumed": sb}))
