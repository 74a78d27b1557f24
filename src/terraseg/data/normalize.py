"""The preprocessing contract: one normalisation function, its statistics stored in the bundle.

Training, validation, evaluation, prediction and serving all call :func:`normalize` with the
:class:`NormStats` computed once on the training data, so the pixels a model sees at prediction
time are bit-identical to those it saw in training (the classic "blank masks in production" bug is
a train/predict preprocessing mismatch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from terraseg.errors import BundleError, InputFileError


@dataclass
class NormStats:
    """Per-band normalisation parameters.

    Attributes:
        method: 'meanstd' ((x - mean) / std), 'percentile' ((x - low) / (high - low) clipped to
            [0, 1]) or 'none' (cast to float32 only).
        mean, std: per-band mean and standard deviation, in the raster's value units.
        low, high: per-band low/high percentiles, in the raster's value units.
    """

    method: Literal["meanstd", "percentile", "none"] = "meanstd"
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (stored in the bundle manifest)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NormStats":
        """Inverse of :meth:`to_dict`."""
        return cls(**d)

    @property
    def bands(self) -> int:
        """Band count the statistics describe (0 for method 'none')."""
        return len(self.mean or self.low)


def compute_stats(
    pixels: np.ndarray, method: str = "meanstd", percentiles: tuple[float, float] = (2.0, 98.0)
) -> NormStats:
    """Compute per-band statistics from sampled valid pixels.

    Args:
        pixels: ``(C, N)`` array of pixel values (any numeric dtype), nodata already removed.
        method: 'meanstd', 'percentile' or 'none'.
        percentiles: low/high percentiles for 'percentile'.

    Returns:
        The statistics; all four lists are filled so either method can be chosen later.
        A band with zero spread gets std 1 (and high = low + 1) to avoid division by zero.

    Raises:
        InputFileError: no valid pixel.
    """
    if pixels.ndim != 2 or pixels.shape[1] == 0:
        raise InputFileError("the training images hold no valid pixel to compute band statistics from (all nodata?).")
    x = pixels.astype(np.float64)
    mean = x.mean(axis=1)
    std = x.std(axis=1)
    std[std <= 0] = 1.0
    low, high = np.percentile(x, percentiles, axis=1)
    high = np.where(high > low, high, low + 1.0)
    return NormStats(method=method, mean=mean.tolist(), std=std.tolist(), low=low.tolist(), high=high.tolist())  # type: ignore[arg-type]


def normalize(image: np.ndarray, stats: NormStats, valid: np.ndarray | None = None) -> np.ndarray:
    """Normalise a raw image; the one preprocessing function of train, evaluate, predict and serve.

    Args:
        image: ``(C, H, W)`` raw pixel values, any numeric dtype (uint8, uint16, int16, float32...).
        stats: statistics from the training data (``stats.bands`` must equal ``C`` unless 'none').
        valid: optional ``(H, W)`` bool; pixels where it is False (nodata, padding) become 0.

    Returns:
        ``(C, H, W)`` float32 array.

    Raises:
        BundleError: the band count differs from the statistics'.
    """
    x = image.astype(np.float32, copy=True)
    if stats.method != "none":
        if stats.bands != x.shape[0]:
            raise BundleError(f"image has {x.shape[0]} bands but the normalisation statistics describe {stats.bands}.")
        if stats.method == "meanstd":
            x -= np.asarray(stats.mean, dtype=np.float32)[:, None, None]
            x /= np.asarray(stats.std, dtype=np.float32)[:, None, None]
        else:
            low = np.asarray(stats.low, dtype=np.float32)[:, None, None]
            x -= low
            x /= np.asarray(stats.high, dtype=np.float32)[:, None, None] - low
            np.clip(x, 0.0, 1.0, out=x)
    np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    if valid is not None:
        x[:, ~valid] = 0.0
    return x
