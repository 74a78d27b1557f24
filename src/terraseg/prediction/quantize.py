"""INT8 inference for CPUs: ONNX Runtime static quantization of a bundle's graph, checked before it is kept.

``terraseg export BUNDLE --quantize int8`` quantizes ``model.onnx`` (QDQ format, per-channel int8
weights, uint8 activations calibrated by min/max over real windows; ONNX Runtime's
``quantize_static``) and adds it as ``model_int8.onnx``. Calibration windows are the raw training
windows stored in the bundle at training time (``calibration.npy``), or windows of images given with
``--check``. The quantized graph is kept only if its class ids disagree with the float32 graph's on
at most ``max_disagreement`` of the calibration pixels; otherwise nothing is saved and the user is
told the figure. ``predict --backend onnx-int8`` runs it.
"""

from __future__ import annotations

import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from terraseg.bundle import CALIBRATION, ONNX, ONNX_INT8, Bundle
from terraseg.errors import BundleError

log = logging.getLogger(__name__)


@dataclass
class QuantizeReport:
    """Result of :func:`quantize_int8`: where it went, the windows used and the class disagreement with float32."""

    path: Path
    windows: int
    disagreement: float
    calibrated_on: str


def calibration_windows(bundle: Bundle, images: list[str], window: int = 256, max_windows: int = 16) -> tuple[np.ndarray, str]:
    """Normalised ``(N, C, window, window)`` float32 windows for calibration.

    Args:
        bundle: the bundle.
        images: images to cut windows from (default: the stored training windows).
        window: window side in pixels.
        max_windows: N at most.

    Returns:
        ``(windows, description of their source)``.

    Raises:
        BundleError: no images given and no calibration windows stored in the bundle.
    """
    from terraseg.data.normalize import normalize
    from terraseg.io.raster import valid_mask

    if images:
        from terraseg.infer.onnx import _check_windows

        return _check_windows(bundle, images, window, max_windows)
    raw = bundle.extras.get(CALIBRATION)
    if raw is None:
        raise BundleError(f"{bundle.path}: no calibration windows stored in the bundle; give images with --check.")
    x = np.load(io.BytesIO(raw), allow_pickle=False)[:max_windows]
    valid = np.stack([valid_mask(w, bundle.manifest.input.nodata) for w in x])
    return np.stack([normalize(w, bundle.stats, v) for w, v in zip(x, valid)]), "training windows stored in the bundle"


def quantize_int8(
    bundle_path: str | Path,
    images: list[str] | None = None,
    out: str | Path | None = None,
    max_disagreement: float = 0.01,
    window: int = 256,
    max_windows: int = 16,
) -> QuantizeReport:
    """Add an INT8 graph to a bundle that already holds ``model.onnx``, if it agrees with float32 closely enough.

    Args:
        bundle_path: the bundle.
        images: calibration images (default: the stored training windows).
        out: where to write the bundle (default: in place).
        max_disagreement: largest share of calibration pixels whose class may differ from the float32 graph's (0.01 =
            1%).
        window: calibration window side in pixels.
        max_windows: calibration windows at most.

    Returns:
        :class:`QuantizeReport`.

    Raises:
        BundleError: no ONNX graph (export it first), no calibration data, a failed quantization, or
            a disagreement above ``max_disagreement`` (nothing is saved then).
    """
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    from terraseg.infer.onnx import OnnxBackend

    b = Bundle.load(bundle_path)
    graph = b.extras.get(ONNX)
    if graph is None:
        raise BundleError(f"{bundle_path}: bundle has no ONNX graph; run `terraseg export BUNDLE --format onnx` first.")
    batch, source = calibration_windows(b, list(images or []), window, max_windows)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"image": w[None]} for w in batch])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="terraseg-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(graph)
        try:
            quantize_static(
                str(src),
                str(dst),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        except Exception as e:  # onnxruntime.quantization raises many kinds; all mean "this graph does not quantize"
            raise BundleError(
                f"{bundle_path}: INT8 quantization failed ({type(e).__name__}: {str(e).splitlines()[0]})."
            ) from None
        data = dst.read_bytes()
    ref = OnnxBackend(graph)(batch).argmax(axis=1)
    got = OnnxBackend(data)(batch).argmax(axis=1)
    disagreement = float((ref != got).mean())
    if disagreement > max_disagreement:
        raise BundleError(
            f"{bundle_path}: the INT8 graph changes the class of {disagreement:.2%} of the calibration pixels "
            f"(limit {max_disagreement:.2%}); not saved."
        )
    b.extras[ONNX_INT8] = data
    b.manifest.exports["onnx_int8"] = {
        "file": ONNX_INT8,
        "format": "QDQ, per-channel int8 weights, uint8 activations (min/max)",
        "calibration_windows": int(len(batch)),
        "calibrated_on": source,
        "class_disagreement_vs_fp32": disagreement,
    }
    target = Path(out or bundle_path)
    b.save(target)
    return QuantizeReport(target, int(len(batch)), disagreement, source)


def calibration_bytes(windows: list[np.ndarray], max_bytes: int = 8 << 20) -> bytes:
    """Raw training windows as ``.npy`` bytes for the bundle (as many as fit in ``max_bytes``).

    Args:
        windows: raw ``(C, h, w)`` windows of one shape and dtype.
        max_bytes: size cap.

    Returns:
        ``np.save`` bytes of a ``(N, C, h, w)`` array (loaded with ``allow_pickle=False``).
    """
    keep = max(1, min(len(windows), max_bytes // max(windows[0].nbytes, 1)))
    buf = io.BytesIO()
    np.save(buf, np.stack(windows[:keep]), allow_pickle=False)
    return buf.getvalue()


__all__ = ["QuantizeReport", "calibration_bytes", "calibration_windows", "quantize_int8"]
