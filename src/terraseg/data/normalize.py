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
import torch

from terraseg.errors import BundleError, InputFileError


@dataclass
class NormStats:
    """Per-band normalisation parameters.

    Attributes:
        method: 'meanstd' ((x - mean) / std), 'percentile' ((x - low) / (high - low) clipped to [0, 1]) or 'none' (cast
            to float32 only).
        mean: per-band mean and standard deviation, in the raster's value units.
        std: per-band mean and standard deviation, in the raster's value units.
        low: per-band low/high percentiles, in the raster's value units.
        high: per-band low/high percentiles, in the raster's value units.
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
    def from_dict(cls, d: dict[str, Any]) -> NormStats:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)

    @property
    def bands(self) -> int:
        """Band count the statistics describe (0 for method 'none')."""
        return len(self.mean or self.low)


def with_fixed_normalisation(stats: NormStats, mean: list[float] | None, std: list[float] | None, bands: int) -> NormStats:
    """``stats`` with a fixed per-band mean and standard deviation (``data.normalization.mean/std``: a pretrained
    encoder's own normalisation), method 'meanstd'; unchanged when neither is given.

    Args:
        stats: the statistics computed on the training data (their low/high stay for drift checks).
        mean: one value for every band, or one per band (None: 0 and 1).
        std: one value for every band, or one per band (None: 0 and 1).
        bands: the input band count.

    Raises:
        ConfigError: a list of another length.
    """
    from terraseg.errors import ConfigError

    if mean is None and std is None:
        return stats
    m, s = list(mean or [0.0]), list(std or [1.0])
    if len(m) not in (1, bands) or len(s) not in (1, bands):
        raise ConfigError(f"data.normalization.mean/std: give one value or {bands} (one per band), not {len(m)} and {len(s)}.")
    stats.method, stats.mean, stats.std = "meanstd", m * (bands // len(m)), s * (bands // len(s))
    return stats


def compute_stats(pixels: np.ndarray, method: str = "meanstd", percentiles: tuple[float, float] = (2.0, 98.0)) -> NormStats:
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


def normalize(image: np.ndarray | torch.Tensor, stats: NormStats, valid: np.ndarray | torch.Tensor | None = None):
    """Normalise a raw image; the one preprocessing function of train, evaluate, predict and serve.

    The same arithmetic runs on NumPy arrays (loader workers, classification) and on torch tensors on
    any device (the predictor normalises raw strips on the GPU); float32 element-wise operations are
    exactly rounded, so both give bit-identical values on the CPU.

    Args:
        image: ``(C, H, W)`` (or ``(N, C, H, W)``) raw pixel values, any numeric dtype (uint8, uint16,
            int16, float32...), as a NumPy array or a torch tensor.
        stats: statistics from the training data (``stats.bands`` must equal ``C`` unless 'none').
        valid: optional ``(H, W)`` (or ``(N, H, W)``) bool of the same kind; pixels where it is False
            (nodata, padding) become 0.

    Returns:
        float32 array (NumPy in, NumPy out; tensor in, tensor out on the same device), shape of ``image``.

    Raises:
        BundleError: the band count differs from the statistics'.
    """
    is_tensor = isinstance(image, torch.Tensor)
    raw: Any = image  # one body for both kinds: each branch below uses its own kind's methods
    x: Any = raw.to(torch.float32, copy=True) if is_tensor else raw.astype(np.float32, copy=True)
    c = x.shape[-3]

    def per_band(values: list[float]):
        if is_tensor:
            return torch.tensor(values, dtype=torch.float32, device=x.device)[:, None, None]
        return np.asarray(values, dtype=np.float32)[:, None, None]

    if stats.method != "none":
        if stats.bands != c:
            raise BundleError(f"image has {c} bands but the normalisation statistics describe {stats.bands}.")
        if stats.method == "meanstd":
            x -= per_band(stats.mean)
            x /= per_band(stats.std)
        else:
            low = per_band(stats.low)
            x -= low
            x /= per_band(stats.high) - low
            if is_tensor:
                x.clamp_(0.0, 1.0)
            else:
                np.clip(x, 0.0, 1.0, out=x)
    if is_tensor:
        torch.nan_to_num_(x, nan=0.0, posinf=0.0, neginf=0.0)
    else:
        np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    if valid is not None:
        if is_tensor:
            x.masked_fill_(~torch.as_tensor(valid).unsqueeze(-3), 0.0)
        else:
            np.putmask(x, np.broadcast_to(np.expand_dims(~valid, -3), x.shape), 0.0)
    return x
