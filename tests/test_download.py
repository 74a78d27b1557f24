"""Data set download against a local HTTP server with Range support: resume, checksum, extraction, no-op."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import pytest

from terraseg.errors import InputFileError
from terraseg.prepare import download as dl


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    ranges: list[str] = []

    def do_GET(self):  # noqa: N802
        body = self.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        rng = self.headers.get("Range")
        self.ranges.append(rng or "")
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *a):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_fetch_resumes_and_verifies(server, tmp_path):
    body = bytes(range(256)) * 4000
    _RangeHandler.files["/f.bin"] = body
    target = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(body[:1000])  # an interrupted earlier download
    _RangeHandler.ranges.clear()
    dl.fetch(f"{server}/f.bin", target, sha256=hashlib.sha256(body).hexdigest())
    assert target.read_bytes() == body and _RangeHandler.ranges == ["bytes=1000-"]
    with pytest.raises(InputFileError, match="sha256 checksum mismatch"):
        dl.fetch(f"{server}/f.bin", tmp_path / "g.bin", sha256="0" * 64)
    assert not (tmp_path / "g.bin").exists() and not (tmp_path / "g.bin.part").exists()
    with pytest.raises(InputFileError, match="HTTP 404"):
        dl.fetch(f"{server}/missing", tmp_path / "h.bin")


def test_download_extracts_once_then_noop(server, tmp_path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("top/Train/Rural/images_png/1.png", b"x")
        z.writestr("top/Train/Rural/masks_png/1.png", b"y")
    _RangeHandler.files["/Train.zip"] = buf.getvalue()
    ds = dl.RemoteDataset(
        "toy",
        "toy",
        (dl.RemoteFile(f"{server}/Train.zip", "Train.zip", md5=hashlib.md5(buf.getvalue()).hexdigest(), extract=True),),
        present=("Train/*/images_png",),
        citation="c",
        licence="l",
    )
    monkeypatch.setitem(dl.DATASETS, "toy", ds)
    folder, fetched = dl.download("toy", tmp_path)
    assert fetched and (folder / "Train" / "Rural" / "masks_png" / "1.png").read_bytes() == b"y"
    assert not (folder / "Train.zip").exists()
    _RangeHandler.ranges.clear()
    folder2, fetched2 = dl.download("toy", tmp_path)
    assert folder2 == folder and not fetched2 and _RangeHandler.ranges == []


def test_registry_names_sources_and_checksums():
    for d in dl.DATASETS.values():
        assert d.files and all(f.url.startswith("https://") for f in d.files)
    assert dl.DATASETS["loveda"].files[0].md5 == "de2b196043ed9b4af1690b3f9a7d558f"
    landsat = Path(dl.data_root()) / "landsat" / "RGB.byte.tif"
    if landsat.exists():  # the known checksum matches the real file
        assert dl._digest(landsat, "sha256") == dl.DATASETS["landsat"].files[0].sha256


def test_data_sets_page_is_current():
    root = Path(__file__).resolve().parents[1]
    text = dl.datasets_markdown()
    assert (root / "docs" / "data.md").read_text() == text, "run: make site"
    for name, ds in dl.DATASETS.items():
        assert f"## `{name}`" in text and all(f.url in text for f in ds.files)
