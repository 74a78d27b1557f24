"""The one tiler: grid windows and random windows over a raster grid.

Every stage that walks a scene (chipping, training and validation sampling, statistics, pixel
baselines, sliding-window prediction, grid classification) asks this module where its windows go,
so edge handling is defined once. The design follows TorchGeo's ``GridGeoSampler`` /
``RandomGeoSampler`` (windows in pixel units of one grid), with the edge rule made explicit:

* ``edge="pad"``: windows step by ``stride`` from 0; while the last window ends before the
  extent, one more is added at ``last + stride``, so it may reach past the edge (readers pad it
  with nodata / ``ignore_index``). Every pixel is covered; windows never overlap when
  ``stride == size``.
* ``edge="shift"``: as ``pad``, but the extra window is placed flush with the end
  (``extent - size``), so no window sticks out of an extent larger than ``size``. Every pixel is
  covered; the last two windows may overlap by more than the others.
* ``edge="clip"``: windows step by ``stride`` and the last one is cut at the extent (its size is
  ``extent - offset``). Every pixel is covered; with ``stride == size`` exactly once.

An extent no larger than ``size`` gets one window at 0 in every mode (``clip`` cuts it to the
extent; ``pad`` and ``shift`` pad it). All units are pixels of the grid; rows and columns are
0-based, as in rasterio's :class:`rasterio.windows.Window`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, NamedTuple

import numpy as np

from terraseg.errors import ConfigError

Edge = Literal["pad", "shift", "clip"]


class PixelWindow(NamedTuple):
    """A window of a grid in pixels: top-left ``(row, col)`` and size ``(height, width)``."""

    row: int
    col: int
    height: int
    width: int


def grid_offsets(extent: int, size: int, stride: int | None = None, edge: Edge = "pad") -> list[int]:
    """Offsets (pixels) of windows of ``size`` at ``stride`` that cover ``[0, extent)`` (see module doc).

    Args:
        extent: grid height or width in pixels (>= 1).
        size: window size in pixels (>= 1).
        stride: step between windows in pixels (default ``size``; 1 <= stride <= size so no pixel is skipped).
        edge: 'pad', 'shift' or 'clip'.

    Returns:
        Sorted, distinct offsets; the first is 0 and every pixel of ``[0, extent)`` lies in a window.

    Raises:
        ConfigError: a non-positive extent or size, a stride outside ``[1, size]``, an unknown edge.
    """
    stride = size if stride is None else stride
    if extent < 1 or size < 1:
        raise ConfigError(f"windows need a positive extent and size (got extent {extent}, size {size} pixels).")
    if not 1 <= stride <= size:
        raise ConfigError(f"stride must be between 1 and the window size {size} pixels, got {stride}.")
    if edge not in ("pad", "shift", "clip"):
        raise ConfigError(f"unknown edge rule '{edge}'; use pad, shift or clip.")
    if extent <= size:
        return [0]
    offsets = list(range(0, extent - size + 1, stride))
    if offsets[-1] + size < extent:
        offsets.append(extent - size if edge == "shift" else offsets[-1] + stride)
    return offsets


def grid_windows(
    height: int, width: int, size: int | tuple[int, int], stride: int | tuple[int, int] | None = None, edge: Edge = "pad"
) -> list[PixelWindow]:
    """Windows covering a ``height x width`` grid, row-major (see :func:`grid_offsets` for the rules).

    Args:
        height: grid size in pixels.
        width: grid size in pixels.
        size: window size in pixels, or ``(height, width)``.
        stride: step in pixels, or ``(row step, column step)``; default the window size.
        edge: 'pad', 'shift' or 'clip'; with 'clip' edge windows are cut to the grid.

    Returns:
        :class:`PixelWindow` list, sorted by row then column.

    Raises:
        ConfigError: as :func:`grid_offsets`.
    """
    sh, sw = (size, size) if isinstance(size, int) else size
    th, tw = (stride, stride) if stride is None or isinstance(stride, int) else stride
    rows, cols = grid_offsets(height, sh, th, edge), grid_offsets(width, sw, tw, edge)
    if edge == "clip":
        return [PixelWindow(r, c, min(sh, height - r), min(sw, width - c)) for r in rows for c in cols]
    return [PixelWindow(r, c, sh, sw) for r in rows for c in cols]


def row_strips(height: int, width: int, size: int) -> Iterator[PixelWindow]:
    """Full-width strips of ``size`` rows (the last one clipped): how streaming passes read a scene.

    Args:
        height: grid size in pixels.
        width: grid size in pixels.
        size: strip height in pixels.

    Yields:
        :class:`PixelWindow` ``(row, 0, min(size, height - row), width)``.
    """
    for r in grid_offsets(height, size, size, "clip"):
        yield PixelWindow(r, 0, min(size, height - r), width)


def random_offset(rng: np.random.Generator, extent: int, size: int, centre: int | None = None) -> int:
    """One random window offset along an axis (TorchGeo's ``RandomGeoSampler``, in pixels).

    Without ``centre`` the offset is uniform over every placement that keeps the window inside the
    extent (a window larger than the extent is placed anywhere that still covers all of it). With
    ``centre``, the window is centred on that pixel with a uniform jitter of up to a quarter of the
    window, then clamped the same way; used to oversample rare classes.

    Args:
        rng: NumPy generator.
        extent: grid height or width.
        size: window size (pixels).
        centre: pixel to centre on, or None.

    Returns:
        The offset in pixels (negative when the window is larger than the extent).
    """
    lo, hi = min(0, extent - size), max(0, extent - size)
    if centre is None:
        return int(rng.integers(lo, hi + 1))
    jitter = int(rng.integers(-(size // 4), size // 4 + 1))
    return int(np.clip(centre - size // 2 + jitter, lo, hi))


__all__ = ["Edge", "PixelWindow", "grid_offsets", "grid_windows", "random_offset", "row_strips"]
