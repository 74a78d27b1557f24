"""Hostile input: mutated files through every reader; only terraseg's own errors may escape.

Each reader gets a valid seed file generated here, then hypothesis mutates it (byte flips, truncation,
inserted junk, header overwrites) and the reader must either succeed or raise a
:class:`terraseg.errors.TerrasegError` (one sentence naming the file), never an exception from deep
inside (rasterio, PIL, pyogrio, zipfile, yaml, safetensors...). Examples per reader are bounded so the
suite stays fast; ``TERRASEG_FUZZ_EXAMPLES`` raises them for a long run (docs/benchmarks.md
gives the figures). Inputs that once crashed a reader are kept as explicit examples below.
"""

from __future__ import annotations

import functools
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import make_bundle, make_geotiff
from terraseg.errors import TerrasegError

N = int(os.environ.get("TERRASEG_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=N,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=os.environ.get("TERRASEG_FUZZ_RANDOM") is None,
)


@st.composite
def mutations(draw, size: int):
    """A list of edits of a file of ``size`` bytes: (kind, position, bytes)."""
    n = draw(st.integers(1, 6))
    edits = []
    for _ in range(n):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite", "zero"]))
        pos = draw(st.integers(0, max(size - 1, 0)))
        data = draw(st.binary(min_size=1, max_size=64))
        edits.append((kind, pos, data))
    return edits


def mutate(seed: bytes, edits) -> bytes:
    b = bytearray(seed)
    for kind, pos, data in edits:
        pos = min(pos, max(len(b) - 1, 0))
        if kind == "flip" and b:
            b[pos] ^= data[0] or 0xFF
        elif kind == "truncate":
            del b[pos:]
        elif kind == "insert":
            b[pos:pos] = data
        elif kind == "overwrite":
            b[pos : pos + len(data)] = data
        elif kind == "zero":
            b[pos : pos + len(data)] = bytes(len(data))
    return bytes(b)


def only_terraseg_errors(fn, *args) -> None:
    try:
        fn(*args)
    except TerrasegError as e:
        assert str(e) and "\n" not in str(e).strip()  # one line
    except MemoryError:
        pytest.fail("a mutated header made a reader allocate without bounds")


@functools.lru_cache(maxsize=1)
def _seeds() -> dict:
    """Valid seed files, generated once per test run (not a fixture: hypothesis would print them in reports)."""
    d = Path(tempfile.mkdtemp(prefix="terraseg-fuzz-"))
    tif, _, _ = make_geotiff(d / "s.tif", 40, 50, bands=3, nodata=0)
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(png, format="PNG")
    gj = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "EPSG:32618"}},
        "features": [
            {
                "type": "Feature",
                "properties": {"cls": "a"},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[500000, 4499990], [500020, 4499990], [500020, 4499970], [500000, 4499990]]],
                },
            }
        ],
    }
    cfg = {
        "name": "f",
        "classes": [{"name": "bg"}, {"name": "x"}],
        "data": {"train": [{"kind": "scene", "image": str(tif), "mask": str(tif)}], "window": 32},
        "model": {"arch": "plain_unet", "base_filters": 8, "encoder_depth": 3},
    }

    make_bundle(window=32, name="f", path=d / "b.terraseg")
    return {
        "tif": Path(tif).read_bytes(),
        "png": png.getvalue(),
        "geojson": json.dumps(gj).encode(),
        "yaml": yaml.safe_dump(cfg).encode(),
        "bundle": (d / "b.terraseg").read_bytes(),
        "dir": d,
    }


def _write(tmp_path_factory, name: str, data: bytes) -> Path:
    p = tmp_path_factory.mktemp("f") / name
    p.write_bytes(data)
    return p


def _read_raster(p: Path) -> None:
    from terraseg.data.rasters import RasterScene

    s = RasterScene(p, cache=False)
    s.read(0, 0, min(s.height, 64), min(s.width, 64), labels=False)


@FUZZ
@given(edits=mutations(6000))
@example(edits=[("truncate", 300, b"\0")])  # a header cut short
@example(edits=[("overwrite", 30, b"\xff" * 16)])  # absurd tile offsets / sizes
def test_fuzz_geotiff_reader(tmp_path_factory, edits):
    only_terraseg_errors(_read_raster, _write(tmp_path_factory, "x.tif", mutate(_seeds()["tif"], edits)))


@FUZZ
@given(edits=mutations(3000))
@example(edits=[("overwrite", 16, b"\x7f\xff\xff\xff\x7f\xff\xff\xff")])  # IHDR claiming a 2^31 x 2^31 image
@example(edits=[("zero", 35, b"\x8d")])  # IDAT length cut: Pillow raised SyntaxError "broken PNG file" (found by fuzzing)
def test_fuzz_png_reader(tmp_path_factory, edits):
    from terraseg.data.sources import scene_from_path

    def read(p):
        s = scene_from_path(p)
        s.read(0, 0, s.height, s.width, labels=False)

    only_terraseg_errors(read, _write(tmp_path_factory, "x.png", mutate(_seeds()["png"], edits)))


@FUZZ
@given(edits=mutations(400))
def test_fuzz_vector_reader(tmp_path_factory, edits):
    from terraseg.io.vector import read_vector

    only_terraseg_errors(read_vector, _write(tmp_path_factory, "x.geojson", mutate(_seeds()["geojson"], edits)))


@FUZZ
@given(edits=mutations(400))
def test_fuzz_config_loader(tmp_path_factory, edits):
    from terraseg.config import load_config

    only_terraseg_errors(load_config, _write(tmp_path_factory, "x.yaml", mutate(_seeds()["yaml"], edits)))


@FUZZ
@given(edits=mutations(20000))
def test_fuzz_bundle_loader(tmp_path_factory, edits):
    from terraseg.bundle import Bundle

    only_terraseg_errors(Bundle.load, _write(tmp_path_factory, "x.terraseg", mutate(_seeds()["bundle"], edits)))


@FUZZ
@given(text=st.text(max_size=400))
@example(text='<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><annotations>&e;</annotations>')
def test_fuzz_cvat_reader(tmp_path_factory, text):
    from terraseg.prepare.cvat import import_cvat

    p = _write(tmp_path_factory, "x.xml", text.encode("utf-8", "surrogatepass"))
    only_terraseg_errors(import_cvat, p, p.parent / "out")


def test_bundle_with_pickled_weights_or_lying_manifest_is_refused(tmp_path):
    seeds = _seeds()
    """A bundle is data: pickle weights are never unpickled; a manifest lying about bands or classes is refused."""
    import pickle

    from terraseg.bundle import Bundle

    src = seeds["dir"] / "b.terraseg"

    def rewrite(name: str, change) -> Path:
        out = tmp_path / f"{name}.terraseg"
        with zipfile.ZipFile(src) as z, zipfile.ZipFile(out, "w") as o:
            for info in z.infolist():
                o.writestr(info.filename, change(info.filename, z.read(info.filename)))
        return out

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = rewrite("pickle", lambda n, b: pickle.dumps(Boom()) if n == "weights.safetensors" else b)
    with pytest.raises(TerrasegError):
        Bundle.load(evil)
    assert not (tmp_path / "pwned").exists()  # nothing executed

    def lie(key, value):
        def change(n, b):
            if n != "manifest.json":
                return b
            m = json.loads(b)
            m["input"][key] = value
            return json.dumps(m).encode()

        return change

    with pytest.raises(TerrasegError, match="weights do not fit"):
        Bundle.load(rewrite("bands", lie("bands", 7)))
    wrong_classes = rewrite(
        "classes",
        lambda n, b: (
            json.dumps(json.loads(b) | {"classes": [{"name": c} for c in "abcde"]}).encode() if n == "manifest.json" else b
        ),
    )
    with pytest.raises(TerrasegError, match="weights do not fit"):
        Bundle.load(wrong_classes)
