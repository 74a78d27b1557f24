#!/usr/bin/env bash
# a wheel built from the checkout, installed away from it, serves the web page with its map
# (Leaflet shipped as package data by setup.py). Run after `make install` (uses .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
tmp=$(mktemp -d)
rm -rf build  # a stale setuptools build folder would mask a missing build hook
trap 'rm -rf "$tmp"' EXIT
"$ROOT/.venv/bin/pip" wheel . --no-deps --no-build-isolation -q -w "$tmp/dist" 2>&1 | grep -v "^WARNING: Location" || true
"$ROOT/.venv/bin/pip" install --no-deps -q --target "$tmp/site" "$tmp"/dist/terraseg-*.whl 2>&1 | grep -v "^WARNING: Location" || true
cd "$tmp"  # away from the checkout: no node_modules, no src/
PYTHONPATH="$tmp/site" HF_HUB_OFFLINE=1 "$ROOT/.venv/bin/python" - "$tmp" <<'PY'
import sys
from pathlib import Path

import torch
from fastapi.testclient import TestClient

import terraseg
from terraseg.bundle import Bundle, BundleManifest, InputSpec
from terraseg.config import ClassSpec, ModelConfig
from terraseg.config.inference import ServeConfig
from terraseg.data.normalize import NormStats
from terraseg.models.factory import build_model
from terraseg.serve.app import create_app

tmp = Path(sys.argv[1])
assert Path(terraseg.__file__).resolve().is_relative_to(tmp / "site"), terraseg.__file__  # the wheel, not the checkout
mc = ModelConfig(arch="plain_unet", base_filters=8, encoder_depth=3)
m = BundleManifest(name="w", model=mc, classes=[ClassSpec(name="a"), ClassSpec(name="b")],
                   input=InputSpec(bands=3, dtype="uint8", normalization=NormStats("none"), train_window=64, predict_window=64))
Bundle(m, build_model(mc, 3, 2)).save(tmp / "w.terraseg")
c = TestClient(create_app(ServeConfig(models=[str(tmp / "w.terraseg")])))
page = c.get("/").text
assert "/vendor/leaflet.js" in page
for url in ("/vendor/leaflet.js", "/vendor/leaflet.css", "/vendor/images/marker-icon.png", "/static/app.js"):
    r = c.get(url)
    assert r.status_code == 200 and len(r.content) > 500, (url, r.status_code)
print("wheel check: installed wheel serves the page with Leaflet from package data")
PY
