"""Input drift: does new imagery look like the training data? (``predict`` and ``serve`` warn when not.)

The bundle keeps the training data's per-band statistics (mean, standard deviation, 2nd and 98th
percentiles). An input is compared with them on a sample of its valid pixels, per band:

* the standardised mean difference ``(mean_input - mean_train) / std_train`` (Cohen's d with the
  training spread; |d| > 0.5 is a medium, > 0.8 a large effect);
* the share of pixels outside the training 2-98% range, against the 4% expected of data like the
  training data (a sensor, scaling or band-order change moves it far up).

A band is flagged when ``|d|`` exceeds ``smd_threshold`` (default 1.0) or the out-of-range share
exceeds ``range_threshold`` (default 0.25). Typical causes: a different sensor or processing level
(reflectance x 10000 vs 0-1), bands in another order, a seasonal or illumination shift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from terraseg.data.normalize import NormStats
from terraseg.data.windows import grid_windows


@dataclass
class DriftReport:
    """Per-band comparison of an input with the training statistics.

    Attributes:
        bands: band names. smd: standardised mean difference per band. out_of_range: share of sampled
        pixels outside the training 2-98% range per band. flagged: names of the bands beyond a threshold.
        pixels: valid pixels sampled.
    """

    bands: list[str]
    smd: list[float]
    out_of_range: list[float]
    flagged: list[str] = field(default_factory=list)
    pixels: int = 0

    @property
    def drifted(self) -> bool:
        """Whether any band is flagged."""
        return bool(self.flagged)

    def message(self, name: str) -> str:
        """One line for the CLI: which bands drift and by how much."""
        parts = [f"{b} (mean shift {d:+.1f} sd, {o:.0%} outside the training 2-98% range)"
                 for b, d, o in zip(self.bands, self.smd, self.out_of_range) if b in self.flagged]
        return f"{name}: input differs from the training data in band(s) {', '.join(parts)}; predictions may be unreliable."

    def to_dict(self) -> dict:
        """JSON-ready report."""
        return {"drifted": self.drifted, "flagged": self.flagged, "pixels": self.pixels,
                "bands": {b: {"smd": round(d, 3), "out_of_range": round(o, 4)} for b, d, o in zip(self.bands, self.smd, self.out_of_range)}}


def input_drift(scene, stats: NormStats, band_names: list[str] | None = None, max_windows: int = 16, window: int = 256,
                smd_threshold: float = 1.0, range_threshold: float = 0.25) -> DriftReport | None:
    """Compare ``scene``'s pixels with the training statistics (None when the bundle has none to compare with).

    Args:
        scene: the input (raw pixels). stats: the bundle's training statistics.
        band_names: names for the report (default B1, B2...). max_windows, window: the sample, spread
            evenly over the scene (at most ``max_windows`` windows of ``window`` pixels).
        smd_threshold, range_threshold: flagging thresholds (module docstring).

    Returns:
        :class:`DriftReport`, or None for 'none' statistics.
    """
    if stats.method == "none" or not stats.mean or not stats.std:
        return None
    wins = list(grid_windows(scene.height, scene.width, window, window, "clip"))
    step = max(1, len(wins) // max_windows)
    C = len(stats.mean)
    s1, out, n = np.zeros(C), np.zeros(C), 0
    low, high = np.asarray(stats.low or [-np.inf] * C), np.asarray(stats.high or [np.inf] * C)
    for w in wins[::step][:max_windows]:
        r = scene.read(w.row, w.col, w.height, w.width, labels=False)
        x = r.image[:, r.valid].astype(np.float64)
        if x.size == 0:
            continue
        s1 += x.sum(axis=1)
        out += ((x < low[:, None]) | (x > high[:, None])).sum(axis=1)
        n += x.shape[1]
    if n == 0:
        return None
    mean = s1 / n
    smd = (mean - np.asarray(stats.mean)) / np.maximum(np.asarray(stats.std), 1e-12)
    oor = out / n
    names = band_names or [f"B{k + 1}" for k in range(C)]
    flagged = [b for b, d, o in zip(names, smd, oor) if abs(d) > smd_threshold or o > range_threshold]
    return DriftReport(names, [float(v) for v in smd], [float(v) for v in oor], flagged, int(n))


__all__ = ["DriftReport", "input_drift"]
