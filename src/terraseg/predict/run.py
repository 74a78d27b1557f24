"""``terraseg predict``: predict files with a bundle and write georeferenced outputs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from terraseg.bundle import Bundle
from terraseg.data.sources import scene_from_path
from terraseg.errors import TerrasegError
from terraseg.predict.outputs import predict_to_files
from terraseg.predict.sliding import predictor_for

log = logging.getLogger(__name__)


@dataclass
class PredictResult:
    """Outputs per input file, and the inputs that failed with their one-line reason."""

    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def predict(
    bundle: str | Path | Bundle,
    inputs: list[str | Path],
    out_dir: str | Path,
    window: int | None = None,
    overlap: float = 0.25,
    batch_size: int = 4,
    probabilities: bool = False,
    overlay: bool = False,
    device: str = "cpu",
    precision: str = "32",
    channels_last: bool = False,
    backend: str = "torch",
) -> PredictResult:
    """Predict every input; a bad input is reported and skipped, the others still run.

    Args:
        bundle: bundle path or loaded bundle. inputs: image files (GeoTIFF, PNG, JPEG, ...).
        out_dir: output folder (one output per input, same stem). window/overlap/batch_size: sliding
        window settings. probabilities/overlay: extra outputs. device/precision/channels_last:
        inference settings ('bf16' autocast, NHWC layout). backend: 'torch' or 'onnx' (the bundle's exported graph).

    Raises:
        BundleError: the bundle cannot be loaded.
    """
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    predictor = predictor_for(b, window, overlap, batch_size, device, precision, channels_last, backend)
    colors = [c.color for c in b.manifest.classes]
    result = PredictResult()
    for path in inputs:
        try:
            scene = scene_from_path(path, bands=bands_for(b), ignore_index=b.manifest.ignore_index)
            result.outputs[str(path)] = predict_to_files(predictor, scene, Path(out_dir), colors, probabilities, overlay)
        except TerrasegError as e:
            result.failures[str(path)] = str(e)
    return result


def bands_for(b: Bundle) -> list[int] | None:
    """The training band selection when it is a strict subset (e.g. 3 of 13 bands), else all bands."""
    idx = b.manifest.input.band_indexes
    if idx and idx != list(range(1, len(idx) + 1)):
        return idx
    return None
