"""Scene classification on every backend: images/s and agreement with PyTorch float32, on real images.

A classification bundle (default: a planned 2-minute run on the Intel scenes, trained here) is exported to
ONNX (``terraseg export --format onnx``) and classifies the same images through
:class:`terraseg.infer.classify.ImageClassifier` with each runtime: PyTorch float32, PyTorch bf16
autocast (where the CPU or GPU has native bf16), ONNX Runtime float32, and what ``auto`` picks. Printed
per runtime: images per second after one warm-up pass (decoding excluded: the images are read once,
up front), the share of images whose predicted class differs from PyTorch float32, the largest
probability difference, and the validation accuracy of the bundle's recorded hold-out images.
Run it with nothing else on the CPU.

Usage:
    python benchmarks/classify_backends.py [--bundle B.terraseg] [--images N] [--minutes 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from terraseg.devices import cpu_model, native_bf16, resolve_device
from terraseg.settings import data_root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=None, help="classification bundle (default: train one on the Intel scenes)")
    p.add_argument("--images", type=int, default=512, help="hold-out images classified (at most)")
    p.add_argument("--minutes", type=float, default=2.0, help="budget of the planned run when no --bundle is given")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=32)
    a = p.parse_args()
    exe = str(Path(sys.executable).with_name("terraseg"))
    device = resolve_device(a.device)
    from terraseg.bundle import Bundle
    from terraseg.config.inference import InferenceConfig
    from terraseg.infer.classify import ImageClassifier
    from terraseg.infer.inputs import read_input_image
    from terraseg.prediction.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        bundle = a.bundle
        if bundle is None:
            subprocess.run(
                [
                    exe,
                    "-q",
                    "train",
                    "--data",
                    str(data_root() / "intel-scenes"),
                    "--minutes",
                    str(a.minutes),
                    "--set",
                    f"output_dir={tmp}/intel",
                    "--set",
                    "tracking.enabled=false",
                ],
                check=True,
                cwd=tmp,
            )
            bundle = Path(tmp) / "intel" / "model.terraseg"
        export_onnx(bundle, out=str(Path(tmp) / "with-onnx.terraseg"))
        b = Bundle.load(Path(tmp) / "with-onnx.terraseg")
        files = [(f, int(k)) for f, k in (b.manifest.split or {}).get("files", [])][: a.images]
        if not files:
            raise SystemExit(f"{bundle}: the bundle records no hold-out images to classify.")
        images = [read_input_image(b, f) for f, _ in files]
        truth = np.array([k for _, k in files])
        print(
            f"CPU: {cpu_model()}; device {device}; bundle {b.manifest.name} ({b.manifest.model.encoder}, input "
            f"{b.manifest.input.input_size} px); {len(images)} hold-out images, batch {a.batch_size}"
        )
        print(f"{'runtime':24} {'images/s':>9} {'accuracy':>9} {'class differs':>14} {'max |dp|':>9}")
        variants = [("torch", "32")] + ([("torch", "bf16")] if native_bf16(device) else []) + [("onnx", "32"), ("auto", "auto")]
        ref = None
        for backend, precision in variants:
            opts = InferenceConfig(device=device, backend=backend, precision=precision, batch_size=a.batch_size)
            clf = ImageClassifier(b, options=opts)
            clf.probabilities(images[: a.batch_size])  # warm-up
            t0 = time.perf_counter()
            probs = clf.probabilities(images)
            rate = len(images) / (time.perf_counter() - t0)
            if ref is None:
                ref = probs
            rt = clf.runtime
            name = f"{backend}:{precision}" + (f" -> {rt.backend}:{rt.precision}" if backend == "auto" and rt else "")
            differs = float((probs.argmax(1) != ref.argmax(1)).mean())
            print(
                f"{name:24} {rate:9.1f} {float((probs.argmax(1) == truth).mean()):9.3f} {differs:14.2%} "
                f"{float(np.abs(probs - ref).max()):9.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
