"""Pictures of rasters and class maps: class colours, a display stretch of any bands, overlays.

Used wherever terraseg draws: prediction overlays, evaluation overlays, the web page's results.
"""

from __future__ import annotations

import numpy as np

from terraseg.io.predictions import hex_to_rgb


def colorize(ids: np.ndarray, colors: list[str]) -> np.ndarray:
    """``(H, W)`` class ids -> ``(3, H, W)`` uint8 colours (nodata / out-of-range: black).

    Args:
        ids: ``(H, W)`` integer class ids.
        colors: ``'#rrggbb'`` colour of each class id.

    Returns:
        ``(3, H, W)`` uint8 RGB.
    """
    lut = np.zeros((256, 3), dtype=np.uint8)
    for i, c in enumerate(colors[:255]):
        lut[i] = hex_to_rgb(c)
    return np.moveaxis(lut[np.clip(ids, 0, 255).astype(np.uint8)], -1, 0)


def display_rgb(image: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """``(C, H, W)`` raw pixels -> ``(3, H, W)`` uint8 for display: first three bands (or grey), 2-98% stretch.

    Args:
        image: ``(C, H, W)`` raw pixels, any dtype.
        valid: ``(H, W)`` bool; percentiles use valid pixels only.

    Returns:
        ``(3, H, W)`` uint8.
    """
    x = image[:3].astype(np.float32)
    if x.shape[0] < 3:
        x = np.repeat(x[:1], 3, axis=0)
    sel = x[:, valid] if valid is not None and valid.any() else x.reshape(3, -1)
    lo, hi = np.percentile(sel, 2, axis=1), np.percentile(sel, 98, axis=1)
    y = (x - lo[:, None, None]) / np.maximum(hi - lo, 1e-6)[:, None, None]
    return (np.clip(y, 0, 1) * 255).astype(np.uint8)


def blend_overlay(rgb: np.ndarray, ids: np.ndarray, colors: list[str], alpha: float = 0.45) -> np.ndarray:
    """Colour non-background classes (id >= 1) over an RGB image; background and nodata stay as they are.

    Args:
        rgb: ``(3, H, W)`` uint8 display image.
        ids: ``(H, W)`` class ids (negative = nodata).
        colors: class colours.
        alpha: opacity of the class colour in [0, 1].

    Returns:
        ``(3, H, W)`` uint8.
    """
    col = colorize(ids, colors).astype(np.float32)
    out = rgb.astype(np.float32)
    m = ids >= 1
    out[:, m] = (1 - alpha) * out[:, m] + alpha * col[:, m]
    return out.astype(np.uint8)


__all__ = ["blend_overlay", "colorize", "display_rgb"]
