"""A stranger's machine: a clone with no ``../shared`` beside it fetches the demo's data from a mirror and trains.

The mirror is a local HTTP server over the data root (the layout ``terraseg download`` expects of
``TERRASEG_DOWNLOAD_URL``), so the same files and checksums as the public sources are used without a network.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import DATA, needs_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def mirror(tmp_path):
    """Serve a folder over HTTP on loopback; yields ``serve(folder) -> base URL``."""
    servers = []

    def serve(folder: Path) -> str:
        handler = functools.partial(_Quiet, directory=str(folder))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield serve
    for srv in servers:
        srv.shutdown()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def _demo_download_line() -> list[str]:
    """The download step of ``make demo``, as the Makefile writes it (``$(BIN)/terraseg download NAME``)."""
    recipe = re.search(r"^demo:.*?\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    line = next(x.strip() for x in recipe.splitlines() if " download " in x)
    assert line.startswith("$(BIN)/terraseg download ")
    return line.split()[1:]


@pytest.mark.slow
@needs_data("massachusetts-buildings")
@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs git and a checkout")
def test_clone_without_shared_downloads_the_demo_data_and_trains(tmp_path, mirror):
    clone = tmp_path / "terraseg"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    assert not (tmp_path / "shared").exists()
    home = tmp_path / "home"
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "PYTHONPATH": str(clone / "src"),
        "HF_HUB_OFFLINE": "1",
        "NO_COLOR": "1",
        "COLUMNS": "200",
        "TERRASEG_DOWNLOAD_URL": mirror(DATA),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    cli = [sys.executable, "-m", "terraseg"]

    def run(*args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([*cli, *args], cwd=clone, env=env, capture_output=True, text=True, timeout=600, **kw)

    where = run("download", "--where")
    root = Path(where.stdout.strip())
    assert root == home / "data" / "terraseg" / "datasets", where.stdout + where.stderr  # the user's data folder

    got = run(*_demo_download_line())
    assert got.returncode == 0, got.stdout + got.stderr
    for name in ("22978945_15.tif", "23429155_15.tif", "massachusetts_buildings.zip"):
        assert (root / "massachusetts-buildings" / name).read_bytes() == (DATA / "massachusetts-buildings" / name).read_bytes()
    assert not list(root.rglob("*.part"))
    again = run(*_demo_download_line())
    assert again.returncode == 0 and "already present" in again.stdout

    trained = run(
        "train",
        "configs/massachusetts-buildings.yaml",
        "--set",
        "train.max_epochs=1",
        "--set",
        "data.samples_per_epoch=16",
        "--set",
        "train.max_minutes=3",
        "--set",
        "train.export_onnx=false",
        "--set",
        "train.choose_tiling=false",
        "--set",
        "train.calibrate=false",
    )
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]
    assert (clone / "runs" / "massachusetts-buildings" / "model.terraseg").is_file()


@pytest.mark.slow
@needs_data("massachusetts-buildings")
def test_corrupt_download_is_refused_with_nothing_under_the_final_name(tmp_path, mirror):
    bad = tmp_path / "mirror" / "massachusetts-buildings"
    bad.mkdir(parents=True)
    for f in (DATA / "massachusetts-buildings").iterdir():
        shutil.copy(f, bad / f.name)
    tif = bad / "22978945_15.tif"
    data = bytearray(tif.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the image data
    tif.write_bytes(bytes(data))
    root = tmp_path / "root"
    got = subprocess.run(
        [
            sys.executable,
            "-m",
            "terraseg",
            "download",
            "massachusetts-buildings",
            "--root",
            str(root),
            "--base-url",
            mirror(tmp_path / "mirror"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NO_COLOR": "1", "COLUMNS": "300"},
    )
    assert got.returncode == 1
    lines = [x for x in got.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "sha256 checksum mismatch" in lines[0] and "22978945_15.tif" in lines[0], got.stderr
    assert "Traceback" not in got.stderr
    assert not (root / "massachusetts-buildings" / "22978945_15.tif").exists()
    assert not list(root.rglob("*.part"))


def test_offline_download_names_the_url_and_where_to_put_the_file(tmp_path):
    from terraseg.errors import InputFileError
    from terraseg.prepare import download as dl

    with pytest.raises(InputFileError) as e:
        dl.download("massachusetts-buildings", tmp_path, base_url="http://127.0.0.1:9")  # nothing listens on port 9
    text = str(e.value)
    assert "http://127.0.0.1:9/massachusetts-buildings/22978945_15.tif" in text
    assert str(tmp_path / "massachusetts-buildings" / "22978945_15.tif") in text and "sha256 d853f8" in text
    assert "\n" not in text
