"""How long the ONNX export at the end of a training run takes on this machine: measured, not assumed.

The wall budget (``train.max_minutes``) keeps time for the export so that a bundle trained within its
budget carries its graph. The export of a network (``torch.onnx.export``, an ONNX Runtime session, a
check against PyTorch) takes seconds to tens of seconds depending on the network and the CPU, so the
reserve is the time of a trial export of the run's own, freshly built network, measured once per
network shape, CPU model and library versions and cached in the cache folder
(:func:`terraseg.settings.cache_dir`, ``export_seconds.json``).
"""

from __future__ import annotations

import copy
import logging
import time

import numpy as np
import torch

from terraseg.devices import cpu_model
from terraseg.io import cachefile

log = logging.getLogger(__name__)
CACHE = "export_seconds.json"
MARGIN = 1.3  # the real export also checks real windows and writes the bundle: a margin over the trial
WINDOW = 256  # the export's dummy and check window (terraseg.config.inference.ExportConfig.window)


def export_key(arch: str, encoder: str | None, bands: int, classes: int) -> str:
    """The cache key of a network's export time: its shape, this CPU and the library versions.

    Args:
        arch: the model config's.
        encoder: the model config's.
        bands: input bands.
        classes: output channels.
    """
    import onnxruntime

    return "|".join([arch, str(encoder), str(bands), str(classes), cpu_model(), torch.__version__, onnxruntime.__version__])


def trial_export(model: torch.nn.Module, bands: int, opset: int = 17) -> float:
    """Seconds to export a copy of ``model`` to ONNX and run it once in ONNX Runtime, as the real export does.

    Args:
        model: the network (copied, on the CPU; the original is untouched).
        bands: input bands.
        opset: ONNX opset.

    Raises:
        Exception: whatever the export raises (the caller reserves nothing then: the export will fail too).
    """
    import onnxruntime as ort

    from terraseg.infer.onnx import export_graph

    t0 = time.perf_counter()
    m = copy.deepcopy(model).cpu().float().eval()
    dummy = torch.zeros(1, bands, WINDOW, WINDOW)
    graph = export_graph(m, dummy, opset)
    with torch.no_grad():
        x = np.random.default_rng(0).standard_normal((2, bands, WINDOW, WINDOW)).astype(np.float32)
        m(torch.from_numpy(x))
    ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(None, {"image": x})
    return time.perf_counter() - t0


def export_reserve(model: torch.nn.Module, key: str, bands: int) -> float:
    """Seconds the budget keeps for the ONNX export: the cached measurement, else a trial export now (then cached).

    Args:
        model: the run's network.
        key: :func:`export_key`.
        bands: input bands.

    Returns:
        The measured seconds times :data:`MARGIN`; 0 when the network does not export (the real export is then
        skipped with its reason anyway).
    """
    cached = cachefile.read_json(CACHE).get(key)
    if isinstance(cached, (int, float)) and cached > 0:
        return float(cached) * MARGIN
    try:
        seconds = trial_export(model, bands)
    except Exception as e:  # noqa: BLE001 - a network that does not export: nothing to reserve
        log.info("trial ONNX export failed (%s): no time reserved for it", e)
        return 0.0
    cachefile.update_json(CACHE, key, round(seconds, 2))
    log.info("ONNX export of this network measured at %.1f s on %s (reserved %.1f s)", seconds, cpu_model(), seconds * MARGIN)
    return seconds * MARGIN


__all__ = ["export_key", "export_reserve", "trial_export"]
