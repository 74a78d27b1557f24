"""Every writing command against every hostile output path: a parent that is a file, a read-only folder, a file
where a folder is wanted (or a folder where a file is), a path with spaces and non-ASCII characters, a full disk.

Each gets one line naming the path and exit 1, or a correct result; nothing is left under a final name. The
read-only and full filesystems are real (tmpfs mounted read-only, and one filled to the last byte) where the tests
run as root with mount rights (CI); as another user the read-only folder is a chmod 555 folder and the full disk
is skipped with its reason.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin
from typer.testing import CliRunner

from conftest import make_geotiff, tiny_config, write_mask_tif
from terraseg.cli.main import app

runner = CliRunner()
HOSTILE = ("parent_is_a_file", "read_only", "wrong_kind", "spaces_and_accents", "full_disk")


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _mount(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0


class _Files(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    a, _, truth = make_geotiff(tmp / "a.tif", 96, 96, seed=1)
    b, _, _ = make_geotiff(tmp / "b.tif", 96, 96, seed=2, origin=(500096.0, 4500000.0))
    mask = write_mask_tif(tmp / "a_mask.tif", truth, a)
    with rasterio.open(a) as ds:
        x0, y0, x1, y1 = ds.bounds
    poly = [[[x0 + 10, y1 - 10], [x0 + 50, y1 - 10], [x0 + 50, y1 - 50], [x0 + 10, y1 - 50], [x0 + 10, y1 - 10]]]
    vec = tmp / "a.geojson"
    vec.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "EPSG:32618"}},
                "features": [{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": poly}}],
            }
        )
    )
    cfg = tiny_config(
        tmp,
        {"image": a, "mask": mask, "test_image": a, "test_mask": mask},
        train={"max_epochs": 1, "seed": 0, "export_onnx": False, "calibrate": False, "choose_tiling": False},
    )
    cfg["tracking"] = {"enabled": True}
    (tmp / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert run("train", tmp / "c.yaml").exit_code == 0
    cfg["tracking"] = {"enabled": False}
    cfg["tune"] = {"params": {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-2}}}
    (tmp / "t.yaml").write_text(yaml.safe_dump(cfg))
    assert run("chip", a, "--labels", mask, "--size", "32", "--out", tmp / "chips").exit_code == 0
    index = next((tmp / "chips").glob("index.*"))
    # a class map, a sample of it, labelled
    prof = dict(
        driver="GTiff",
        width=60,
        height=50,
        count=1,
        dtype="uint8",
        crs="EPSG:32618",
        transform=from_origin(500000, 4500000, 10, 10),
        nodata=255,
    )
    cmap = (np.random.default_rng(0).random((50, 60)) < 0.3).astype(np.uint8)
    with rasterio.open(tmp / "map.tif", "w", **prof) as d:
        d.write(cmap, 1)
    assert run("sample", tmp / "map.tif", "--n", "60", "--out", tmp / "pts.gpkg").exit_code == 0
    import geopandas as gpd

    pts = gpd.read_file(tmp / "pts.gpkg")
    pts["reference"] = pts["map_class"].astype(int)
    pts.to_file(tmp / "labelled.gpkg", driver="GPKG")
    # a toy data set on a local server, for `download`
    _Files.body = b"toy data"
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    from terraseg.prepare import download as dl

    toy = dl.RemoteDataset(
        "toy",
        "toy",
        (
            dl.RemoteFile(
                f"http://127.0.0.1:{srv.server_address[1]}/f.bin", "f.bin", sha256=hashlib.sha256(_Files.body).hexdigest()
            ),
        ),
        present=("f.bin",),
        citation="c",
        licence="l",
    )
    # hostile places shared by the cases
    (tmp / "blocker").write_text("a file in the way")
    ro, full = tmp / "ro", tmp / "full"
    ro_ok = _mount(ro, "ro,size=64k")
    if not ro_ok:
        ro.chmod(0o555)
    full_ok = _mount(full, "size=16k")
    if full_ok:  # fill it to the last byte
        with open(full / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 512)
            except OSError:
                pass
    yield {
        "tmp": tmp,
        "a": a,
        "b": b,
        "mask": mask,
        "vector": vec,
        "config": tmp / "c.yaml",
        "tune": tmp / "t.yaml",
        "run": tmp / "run",
        "bundle": tmp / "run" / "model.terraseg",
        "index": index,
        "map": tmp / "map.tif",
        "points": tmp / "labelled.gpkg",
        "toy": toy,
        "ro": ro,
        "ro_real": ro_ok,
        "full": full if full_ok else None,
    }
    srv.shutdown()
    for m in (ro if ro_ok else None, full if full_ok else None):
        if m is not None:
            subprocess.run(["umount", str(m)], capture_output=True)
    if not ro_ok:
        ro.chmod(0o755)


# command -> (output kind: "dir" or a file suffix, the arguments given the output path)
COMMANDS = {
    "train": ("dir", lambda k, o: ["train", k["config"], "--set", f"output_dir={o}"]),
    "evaluate": ("dir", lambda k, o: ["evaluate", k["bundle"], k["a"], "--labels", k["mask"], "--out", o]),
    "predict": ("dir", lambda k, o: ["predict", k["bundle"], k["a"], "--out", o]),
    "export": (".terraseg", lambda k, o: ["export", k["bundle"], "--out", o]),
    "stats": ("dir", lambda k, o: ["stats", k["a"], "--out", o]),
    "chip": ("dir", lambda k, o: ["chip", k["a"], "--labels", k["mask"], "--size", "32", "--out", o]),
    "mosaic": (".tif", lambda k, o: ["mosaic", k["a"], k["b"], "--out", o]),
    "rasterize": (".tif", lambda k, o: ["rasterize", k["vector"], "--reference", k["a"], "--out", o]),
    "split": ("dir", lambda k, o: ["split", k["index"], "--out", o]),
    "vectorize": (".geojson", lambda k, o: ["vectorize", k["mask"], "--out", o]),
    "stack": (".tif", lambda k, o: ["stack", k["a"], k["a"], "--out", o]),
    "plan": (".yaml", lambda k, o: ["plan", k["a"], "--labels", k["mask"], "--no-measure", "--out", o]),
    "tune": ("dir", lambda k, o: ["tune", k["tune"], "--trials", "1", "--set", f"output_dir={o}"]),
    "cv": ("dir", lambda k, o: ["cv", k["config"], "--folds", "2", "--block-size", "32", "--out", o]),
    "area": (".json", lambda k, o: ["area", k["map"], "--reference", k["points"], "--out", o]),
    "sample": (".gpkg", lambda k, o: ["sample", k["map"], "--n", "30", "--out", o]),
    "register": (".db", lambda k, o: ["register", k["run"], "--name", "hostile", "--tracking-uri", f"sqlite:///{o}"]),
    "download": ("dir", lambda k, o: ["download", "toy", "--root", o]),
}
SLOW = {"train", "tune", "cv"}


def _snapshot(folder: Path) -> set[str]:
    """The files under final names in ``folder``: hidden temporaries and ``.part`` downloads (kept to resume) are not."""
    if not folder.is_dir():
        return set()
    return {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".part")
    }


@pytest.mark.parametrize(
    "command,hostile",
    [pytest.param(c, h, id=f"{c}-{h}", marks=[pytest.mark.slow] if c in SLOW else []) for c in COMMANDS for h in HOSTILE],
)
def test_every_writing_command_refuses_or_writes_any_output_path(kit, command, hostile, monkeypatch, tmp_path):
    from terraseg.prepare import download as dl

    monkeypatch.setitem(dl.DATASETS, "toy", kit["toy"])
    kind, build = COMMANDS[command]
    name = "out" if kind == "dir" else f"out{kind}"
    if hostile == "full_disk" and kit["full"] is None:
        pytest.skip("no full filesystem here: mounting a small tmpfs needs root with mount rights")
    if hostile == "read_only" and not kit["ro_real"] and os.geteuid() == 0:
        pytest.skip("no read-only filesystem here: root writes into chmod 555 folders, and mounting one needs mount rights")
    place = {
        "parent_is_a_file": kit["tmp"] / "blocker",
        "read_only": kit["ro"],
        "full_disk": kit["full"],
        "spaces_and_accents": tmp_path / "dossier été 2026",
        "wrong_kind": tmp_path / f"taken{'' if kind == 'dir' else kind}",
    }[hostile]
    if hostile == "wrong_kind":  # a file where the folder goes, or a folder where the file goes
        if kind == "dir":
            place.write_text("keep")
        else:
            place.mkdir()
            (place / "keep.txt").write_text("keep")
        target = place
    else:
        target = place / (f"{command}-{name}" if hostile in ("read_only", "full_disk") else name)
    watched = place if hostile in ("read_only", "full_disk", "wrong_kind") and place.is_dir() else None
    before = _snapshot(watched) if watched else set()
    if command == "register":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    res = run(*build(kit, target))
    if hostile == "spaces_and_accents":
        assert res.exit_code == 0, res.output
        assert target.exists() if kind != ".db" else target.is_file()
        return
    lines = [x for x in res.output.splitlines() if x.strip()]
    if res.exit_code == 0:  # a correct result is allowed where the place can take it; full and read-only places cannot
        assert hostile not in ("read_only", "full_disk", "parent_is_a_file"), f"exit 0 and wrote: {res.output}"
        return
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert len(lines) == 1, f"{res.output!r} {res.exception!r}"
    assert str(place) in lines[0] or place.name in lines[0], lines[0]
    if watched is not None:
        assert _snapshot(watched) == before, f"left behind: {_snapshot(watched) - before}"
    if hostile == "wrong_kind" and kind == "dir":
        assert place.read_text() == "keep"
    if hostile == "parent_is_a_file":
        assert (kit["tmp"] / "blocker").read_text() == "a file in the way"
