"""``terraseg export``: a bundle with its ONNX graph added, written in place or to a copy (atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from terraseg.bundle import Bundle
from terraseg.config.inference import ExportConfig
from terraseg.infer.onnx import ExportReport, add_onnx_graph


def export_onnx(bundle: str | Path | Bundle, cfg: ExportConfig | None = None, **options: Any) -> ExportReport:
    """Add an ONNX graph to a bundle (in place, or into a copy at ``cfg.out``), checked against PyTorch.

    Args:
        bundle: the bundle (a path, or a loaded bundle, which is then saved to its ``path`` or ``cfg.out``).
        cfg: :class:`terraseg.config.inference.ExportConfig` (opset, output, check images, window);
            or its fields as keyword ``options`` (``out``, ``opset``, ``check_images``, ``window``, ``max_windows``).

    Returns:
        An :class:`ExportReport` with the largest absolute logit difference; ``path`` is the bundle written.

    Raises:
        BundleError: unloadable bundle, export failure, an image that does not fit the model, or an ONNX graph that
            disagrees with PyTorch by more than 1e-3 (nothing written).
        ConfigError: invalid options.
        OutputError: the target cannot be written.
    """
    from terraseg.config.inference import build_options

    cfg = cfg or build_options(ExportConfig, **options)
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    report = add_onnx_graph(b, cfg)
    b.save(report.path)
    return report


__all__ = ["export_onnx"]
