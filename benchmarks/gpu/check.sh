#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md, in one call on a GPU machine (after prepare.sh here):
#   1. predict a generated 16384^2 uint8 scene (U-Net/ResNet34, window 512, overlap 0.25) in fp32 and
#      bf16 + channels_last vs the bare forward over the same windows; codecs/levels; one reader vs several;
#   2. bare training step vs `terraseg train` wall throughput (Massachusetts on mask rasters, 256^2,
#      batch 64, 3 epochs x 4096 windows, defaults otherwise) and the loader alone;
#   3. fp32 vs bf16 classes on the Massachusetts test tile with the bundle trained in 2;
#   4. the API at 1 and 16 clients vs the bare forward at batch 16.
# Logs go to $OUT (the device tool's return folder) or /tmp/gpu-out. Dry run on a CPU:
#   DRY=1 PY=.venv/bin/python DEVICE=cpu SIZE=1024 SAMPLES=64 BATCH=8 DUR=2 bash benchmarks/gpu/check.sh
# STAGES="train serve" runs a subset (precision and serve use the bundle that train keeps); WORKERS="1 4"
# measures the API with 1 and 4 server processes.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
if [ -d .whl ] && [ -z "${DRY:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=$PWD/src:/tmp/site
fi
PY=${PY:-python3}
export TERRASEG_DATA=$PWD/.gpu/datasets HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
SIZE=${SIZE:-16384}; SAMPLES=${SAMPLES:-4096}; BATCH=${BATCH:-64}; DUR=${DUR:-8}; EPOCHS=${EPOCHS:-3}
STAGES=" ${STAGES:-predict train precision serve} "
on() { [[ "$STAGES" == *" $1 "* ]]; }
(nvidia-smi -L; $PY -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, torch.cuda.is_available())"; nproc) 2>&1 | tee "$OUT/env.log"
on predict && $PY benchmarks/predict_throughput.py --sizes "$SIZE" --codecs --encoder resnet34 --compare-size 2048 --workdir /tmp/pt ${DEVICE:+--device $DEVICE} 2>&1 | tee "$OUT/predict.log"
rm -rf /tmp/pt
on train && $PY benchmarks/train_throughput.py .gpu/massachusetts-masks.yaml --fit --epochs "$EPOCHS" --keep /tmp/gpu-run \
  --set data.batch_size=$BATCH --set data.samples_per_epoch=$SAMPLES --set train.export_onnx=false 2>&1 | tee "$OUT/train.log"
T=.gpu/datasets/massachusetts-buildings/23429155_15
on precision && $PY benchmarks/precision_diff.py /tmp/gpu-run/model.terraseg $T.tif --mask ${T}_mask.tif ${DEVICE:+--device $DEVICE} 2>&1 | tee "$OUT/precision.log"
if on serve; then
  B=/tmp/gpu-run/model.terraseg  # the bundle `train` kept, else a random-weights U-Net/Lite0 (speed does not depend on weights)
  [ -f $B ] || B=$($PY -c "import sys; sys.path.insert(0, 'benchmarks'); from predict_throughput import demo_bundle; print(demo_bundle(__import__('pathlib').Path('/tmp/serve.terraseg'), 'timm-tf_efficientnet_lite0'))")
  for w in ${WORKERS:-1}; do
    $PY benchmarks/serve_bench.py latency --bundle $B --backend torch --clients 1 16 --duration "$DUR" --workers $w 2>&1 | tee -a "$OUT/serve.log"
  done
fi
echo "== summary"; grep -hE "\^2|codec|one reader|bare step|loader alone|terraseg train|first epoch|change class|IoU|req/s|clients|^torch " "$OUT"/*.log | grep -v Warning
