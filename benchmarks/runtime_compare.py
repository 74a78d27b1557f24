"""Backends, precisions and overlaps on a real labelled scene: time, IoU and pixels that change class.

For a bundle and a labelled image (default: the demo bundle on Massachusetts test tile 23429155_15),
each variant predicts the whole tile with the CLI's predictor and prints the seconds (after one
warm-up run), the positive-class IoU (binary bundles; else mIoU) and the share and count of pixels
whose class differs from PyTorch float32 NCHW at the same window and overlap. Variants: PyTorch
float32, float32 + channels_last, bf16 + channels_last (where the CPU or GPU has native bf16), ONNX
Runtime (when the bundle holds a graph), its INT8 graph (after ``terraseg export --quantize int8``),
what ``auto`` picks; then overlaps 0.125 / 0.25 / 0.5 with
the ``auto`` runtime (the default overlap is chosen from this trade-off).

Usage:
    python benchmarks/runtime_compare.py [--bundle runs/massachusetts-buildings/model.terraseg]
        [--image TILE.tif --labels LABELS.zip] [--device cpu|cuda] [--window 256]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from terraseg.bundle import Bundle
from terraseg.config.inference import InferenceConfig
from terraseg.devices import cpu_flags, cpu_model, native_bf16
from terraseg.evaluation.metrics import confusion_matrix, metrics_from_confusion
from terraseg.infer.inputs import open_input
from terraseg.infer.sliding import predictor_for
from terraseg.settings import data_root


def run(bundle: Bundle, scene, opts: InferenceConfig) -> tuple[np.ndarray, float, str]:
    pred = predictor_for(bundle, opts)
    rt = getattr(pred.backend, "runtime", None)
    pred.predict_array(scene)  # warm-up
    t0 = time.perf_counter()
    ids, _ = pred.predict_array(scene)
    return ids, time.perf_counter() - t0, f"{rt.backend} {rt.precision}{' NHWC' if rt.channels_last else ''}" if rt else "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = data_root() / "massachusetts-buildings"
    p.add_argument("--bundle", type=Path, default=Path("runs/massachusetts-buildings/model.terraseg"))
    p.add_argument("--image", type=Path, default=root / "23429155_15.tif")
    p.add_argument("--labels", type=Path, default=root / "massachusetts_buildings.zip")
    p.add_argument("--device", default="cpu")
    p.add_argument("--window", type=int, default=None)
    a = p.parse_args()
    b = Bundle.load(a.bundle)
    scene = open_input(b, a.image, a.labels)
    truth = scene.read(0, 0, scene.height, scene.width).mask
    names = b.class_names

    def score(ids: np.ndarray) -> float:
        m = metrics_from_confusion(confusion_matrix(np.where(ids < 0, 0, ids), truth, len(names), b.manifest.ignore_index), names)
        return m["iou"] if "iou" in m else m["miou"]

    print(
        f"bundle {a.bundle} on {a.image.name} ({scene.width}x{scene.height}); device {a.device}; cpu {cpu_model()} "
        f"x{os.cpu_count()}, native bf16: {native_bf16(a.device)} ({', '.join(sorted(cpu_flags() & {'avx2', 'avx512f', 'avx512_bf16', 'amx_bf16'}))})"
    )
    base = dict(device=a.device, window=a.window)
    variants = [("torch", "32", False), ("torch", "32", True)]
    if native_bf16(a.device):
        variants.append(("torch", "bf16", True))
    if "model.onnx" in b.extras and a.device == "cpu":
        variants.append(("onnx", "32", False))
    if "model_int8.onnx" in b.extras and a.device == "cpu":
        variants.append(("onnx-int8", "auto", False))
    variants.append(("auto", "auto", None))
    ref = None
    for backend, precision, cl in variants:
        ids, secs, label = run(b, scene, InferenceConfig(**base, backend=backend, precision=precision, channels_last=cl))
        ref = ids if ref is None else ref
        diff = int((ids != ref).sum())
        print(
            f"{'auto -> ' if backend == 'auto' else ''}{label:<22} {secs:6.2f} s  IoU {score(ids):.4f}  "
            f"pixels changed vs float32: {diff} ({diff / ids.size:.4%})",
            flush=True,
        )
    for overlap in (0.125, 0.25, 0.5):
        ids, secs, label = run(b, scene, InferenceConfig(**base, overlap=overlap))
        print(f"overlap {overlap:<5} ({label}) {secs:6.2f} s  IoU {score(ids):.4f}", flush=True)


if __name__ == "__main__":
    main()
