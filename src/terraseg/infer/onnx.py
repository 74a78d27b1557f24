"""ONNX export of a bundle's network and the ONNX Runtime inference backend.

Contract of the exported graph (stored in the bundle as ``model.onnx``, described in
``manifest.exports['onnx']``):

* input ``image``: float32 ``(N, C, H, W)``, **already normalised** by
  :func:`terraseg.data.normalize.normalize` with the bundle's ``input.normalization`` (normalisation
  stays outside the graph, so PyTorch and ONNX Runtime share the one preprocessing function); N, H
  and W are dynamic (H and W multiples of 32);
* output ``logits``: float32 ``(N, K', H, W)``, with K' = 1 for binary models (sigmoid) and K' = K
  otherwise (softmax), turned into probabilities by :func:`probs_from_logits`.

The export checks itself: the same windows go through PyTorch and ONNX Runtime and the largest
absolute difference of the logits is recorded in the manifest.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from terraseg.bundle import ONNX, ONNX_INT8, Bundle
from terraseg.errors import BundleError

if TYPE_CHECKING:
    from terraseg.config.inference import ExportConfig

log = logging.getLogger(__name__)


def probs_from_logits(logits: np.ndarray) -> np.ndarray:
    """``(N, K, H, W)`` probabilities from ``(N, 1 or K, H, W)`` logits (sigmoid pair or softmax), float32.

    Args:
        logits: ``(N, 1 or K, H, W)`` network output.

    Returns:
        ``(N, K, H, W)`` float32 probabilities summing to 1 over K.
    """
    z = logits.astype(np.float32, copy=False)
    if z.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-z))
        return np.concatenate([1.0 - p, p], axis=1)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class OnnxBackend:
    """Runs a bundle's ONNX graph with ONNX Runtime: ``(N, C, h, w)`` float32 -> ``(N, K, h, w)`` probabilities.

    Args:
        onnx_bytes: the serialized graph.
        threads: intra-op threads (0: ONNX Runtime's default).
        device: 'cpu' or 'cuda' (CUDAExecutionProvider when installed).
    """

    def __init__(self, onnx_bytes: bytes, threads: int = 0, device: str = "cpu") -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(onnx_bytes, sess_options=opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.temperature = 1.0  # set from the bundle's calibration by onnx_backend_for

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw graph output for a normalised batch."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        z = self.logits(batch)
        return probs_from_logits(z / self.temperature if self.temperature != 1.0 else z)


def onnx_backend_for(bundle: Bundle, threads: int = 0, device: str = "cpu", int8: bool = False) -> OnnxBackend:
    """The ONNX Runtime backend of a bundle.

    Args:
        bundle: the loaded bundle.
        threads: ONNX Runtime intra-op threads (0: its default).
        device: 'cpu' or 'cuda' (the CUDA provider when installed).
        int8: run the INT8 graph (``model_int8.onnx``) instead of the float32 one.

    Returns:
        :class:`OnnxBackend` on the bundle's ``model.onnx``.

    Raises:
        BundleError: the bundle holds no ONNX graph (run ``terraseg export BUNDLE --format onnx``).
    """
    member = ONNX_INT8 if int8 else ONNX
    data = bundle.extras.get(member)
    where = bundle.path or bundle.manifest.name
    if data is None:
        how = "--quantize int8" if int8 else "--format onnx"
        raise BundleError(
            f"{where}: bundle has no {'INT8 ' if int8 else ''}ONNX graph; run `terraseg export BUNDLE {how}` first."
        )
    try:
        backend = OnnxBackend(data, threads, device)
        backend.temperature = float(bundle.manifest.calibration.get("temperature", 1.0))
        return backend
    except Exception as e:  # onnxruntime raises its own exception types for unparsable or invalid graphs
        raise BundleError(f"{where}: its {member} is not a valid ONNX graph ({str(e).splitlines()[0][:200]}).") from None


@dataclass
class ExportReport:
    """Result of :func:`add_onnx_graph`: where the bundle goes, the opset, and the check against PyTorch."""

    path: Path
    opset: int
    max_abs_diff: float
    windows_checked: int
    checked_on: str


def _check_windows(bundle: Bundle, images: list[str], window: int, max_windows: int) -> tuple[np.ndarray, str]:
    """Up to ``max_windows`` normalised ``(N, C, window, window)`` windows of real images (else random inputs)."""
    from terraseg.data.normalize import normalize
    from terraseg.data.windows import grid_windows
    from terraseg.infer.inputs import open_input

    chips = []
    for path in images:
        scene = open_input(bundle, path)
        for w in grid_windows(scene.height, scene.width, window, edge="shift"):
            r = scene.read(w.row, w.col, window, window, labels=False)
            chips.append(normalize(r.image, bundle.stats, r.valid))
            if len(chips) >= max_windows:
                return np.stack(chips), ", ".join(images)
    if chips:
        return np.stack(chips), ", ".join(images)
    rng = np.random.default_rng(0)
    return rng.standard_normal((2, bundle.in_channels, window, window)).astype(np.float32), "random normal inputs"


def export_graph(model: torch.nn.Module, dummy: torch.Tensor, opset: int, spatial: bool = True) -> bytes:
    """The network as an ONNX graph (TorchScript exporter): input ``image``, output ``logits``, a dynamic batch and, with
    ``spatial``, dynamic height and width.

    Args:
        model: the network, in eval mode.
        dummy: ``(1, C, H, W)`` example input.
        opset: ONNX opset.
        spatial: segmentation (``(N, K, H, W)`` logits of any window) rather than classification (``(N, K)``).

    Raises:
        Exception: whatever ``torch.onnx.export`` raises for a network that does not export.
    """
    axes: dict = {"image": {0: "batch"}, "logits": {0: "batch"}}
    if spatial:
        axes = {k: v | {2: "height", 3: "width"} for k, v in axes.items()}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            buf,  # type: ignore[arg-type]  # a file object works; the stubs name only paths
            input_names=["image"],
            output_names=["logits"],
            opset_version=opset,
            dynamo=False,
            dynamic_axes=axes,
        )
    return buf.getvalue()


def add_onnx_graph(b: Bundle, cfg: ExportConfig | None = None, **options: Any) -> ExportReport:
    """Export a loaded bundle's network to an ONNX graph, check it against PyTorch, and add it to the bundle in memory.

    Nothing is written: the caller saves the bundle (:func:`terraseg.prediction.export.export_onnx`), or keeps the graph
    in the cache (:func:`terraseg.infer.runtime.choose_runtime`).

    Args:
        b: the loaded bundle.
        cfg: :class:`terraseg.config.inference.ExportConfig` (opset, check images, window); or its fields as keyword
            ``options`` (``opset``, ``check_images``, ``window``, ``max_windows``).

    Returns:
        An :class:`ExportReport` (``path``: where the bundle is meant to go, ``cfg.out`` or its own path).

    Raises:
        BundleError: unloadable bundle, export failure, an image that does not fit the model, or an
            ONNX graph that disagrees with PyTorch by more than 1e-3.
        ConfigError: invalid options.
    """
    from terraseg.config.inference import ExportConfig, build_options

    cfg = cfg or build_options(ExportConfig, **options)
    opset, window, out = cfg.opset, cfg.window, cfg.out
    import onnxruntime  # noqa: F401  (fail early, before the export, if it is missing)

    bundle_path = b.path or Path(cfg.out or b.manifest.name)
    if b.manifest.baseline is not None:
        raise BundleError(
            f"{bundle_path}: ONNX export covers networks; this bundle is a scikit-learn pixel baseline "
            "(serve and predict it as it is)."
        )
    classify = b.manifest.task == "classification"
    if classify:  # a classifier takes its input size (images are resized to it): only the batch varies
        window = b.manifest.input.side
    model = b.model.eval()
    dummy = torch.zeros(1, b.in_channels, window, window)
    try:
        data = export_graph(model, dummy, opset, spatial=not classify)
    except Exception as e:  # torch.onnx raises many kinds; all mean "this network does not export"
        raise BundleError(f"{bundle_path}: ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0]}).") from None
    batch, source = _check_windows(b, [] if classify else list(cfg.check_images), window, cfg.max_windows)
    with torch.no_grad():
        ref = model(torch.from_numpy(batch)).numpy()
    got = OnnxBackend(data).logits(batch)
    diff = float(np.abs(ref - got).max())
    if diff > 1e-3:
        raise BundleError(
            f"{bundle_path}: the ONNX graph disagrees with PyTorch (max abs logit difference {diff:.2e}); not saved."
        )
    b.extras[ONNX] = data
    b.manifest.exports["onnx"] = {
        "file": ONNX,
        "opset": opset,
        "input": "image: float32 (N, C, H, W), normalised with input.normalization (outside the graph)",
        "output": "logits: float32 (N, K); softmax"
        if classify
        else "logits: float32 (N, 1 or K, H, W); sigmoid for 1 channel, else softmax",
        "dynamic_axes": ["batch"] if classify else ["batch", "height", "width"],
        "max_abs_diff": diff,
        "windows_checked": int(len(batch)),
        "checked_on": source,
        "onnxruntime": __import__("onnxruntime").__version__,
    }
    log.info("exported ONNX opset %d (max abs diff %.2e on %d windows)", opset, diff, len(batch))
    return ExportReport(Path(out or bundle_path), opset, diff, int(len(batch)), source)
