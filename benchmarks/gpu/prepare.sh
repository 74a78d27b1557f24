#!/usr/bin/env bash
# Prepare, on the development machine, what benchmarks/gpu/check.sh needs on a GPU machine (which
# reaches no network and has no ../shared): the Massachusetts tiles with their building masks
# rasterized here (so the GPU side needs no geopandas), a training config on those masks, and the
# wheels its image lacks. Everything goes to ignored folders (.gpu/, .whl/; about 45 MB).
#
# Usage: bash benchmarks/gpu/prepare.sh   (with the project venv in .venv)
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${TERRASEG_DATA:-../shared/datasets}
D=.gpu/datasets/massachusetts-buildings
mkdir -p "$D" .whl
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
for t in 22978945_15 23429155_15; do
  cp -f "$DATA/massachusetts-buildings/$t.tif" "$D/"
  [ -f "$D/${t}_mask.tif" ] || .venv/bin/terraseg rasterize "$DATA/massachusetts-buildings/massachusetts_buildings.zip" \
      --reference "$D/$t.tif" --out "$D/${t}_mask.tif"
done
# the shipped Massachusetts config with mask rasters instead of the zipped shapefile, no pretrained weights
.venv/bin/python - <<'PY'
import yaml
cfg = yaml.safe_load(open("configs/massachusetts-buildings.yaml"))
for split in ("train", "test"):
    for s in cfg["data"][split]:
        s.pop("vector")
        s["mask"] = s["image"].replace(".tif", "_mask.tif")
cfg["model"]["encoder_weights"] = None
cfg["name"] = "massachusetts-buildings-masks"
open(".gpu/massachusetts-masks.yaml", "w").write(yaml.safe_dump(cfg, sort_keys=False))
PY
# wheels missing from the GPU image (python 3.12; see /work/.library/device/KINDS.md)
py() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
for pkg in rasterio affine cligj click-plugins segmentation-models-pytorch pydantic pydantic_core annotated-types \
           typing-inspection fastapi starlette uvicorn python-multipart opentelemetry-api; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$pkg==$(py "$pkg")" 2>/dev/null
done
du -sh .gpu .whl
