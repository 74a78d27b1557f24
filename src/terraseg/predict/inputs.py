"""Opening inputs for a bundle: every path that feeds a model reads its bands through here.

The bundle's :meth:`terraseg.bundle.InputSpec.select_bands` decides which raster bands are read
(a pick such as bands 4, 3, 2 of a Sentinel-2 scene, or all bands) and refuses inputs whose band
count does not fit, so ``predict``, ``evaluate``, ``serve``, the ONNX export check and the
classifiers all apply one rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from terraseg.bundle import Bundle
from terraseg.data.scenes import Scene
from terraseg.data.sources import scene_from_path


def open_input(bundle: Bundle, path: str | Path, labels: str | Path | None = None, **label_options: Any) -> Scene:
    """Open an image (and optional labels) as a scene with the bands the bundle's model takes.

    Args:
        bundle: the loaded bundle. path: GeoTIFF (or any GDAL raster), PNG or JPEG.
        labels: optional vector file or mask raster for evaluation.
        **label_options: ``burn_value``, ``attribute``, ``mapping``, ``mask_nodata``
            (see :func:`terraseg.data.sources.scene_from_path`).

    Returns:
        A streamed :class:`terraseg.data.scenes.Scene` whose ``count`` equals the model's band
        count; labels use the bundle's ``ignore_index`` and class count.

    Raises:
        BundleError: the band count does not fit the model.
        InputFileError: a missing or unreadable image or labels.
    """
    m = bundle.manifest
    probe = scene_from_path(path)  # header only: band count
    bands = m.input.select_bands(probe.count, str(path))
    if bands is None and labels is None:
        return probe
    return scene_from_path(path, bands=bands, labels=labels, ignore_index=m.ignore_index, num_classes=len(m.classes),
                           **label_options)


def read_input_image(bundle: Bundle, path: str) -> np.ndarray:
    """Read a whole image (a file or a ``.zip`` member) with the bands the bundle's model takes.

    Args:
        bundle: the loaded bundle. path: image file or ``<archive>.zip/<member>``.

    Returns:
        ``(C, H, W)`` array in the file's dtype, C = the model's band count.

    Raises:
        BundleError: the band count does not fit. InputFileError: a missing or undecodable image.
    """
    from terraseg.data.classes import read_any

    image = read_any(path)
    bands = bundle.manifest.input.select_bands(image.shape[0], path)
    return image if bands is None else image[[b - 1 for b in bands]]


__all__ = ["open_input", "read_input_image"]
