"""Input drift: does new imagery look like the training data? (``predict`` and ``serve`` warn when not.)

The bundle keeps the training data's per-band statistics (mean, standard deviation, 2nd and 98th
percentiles). An input is compared with them on a sample of its valid pixels, per band:

* the standardised mean difference ``(mean_input - mean_train) / std_train`` (Cohen's d with the
  training spread; |d| > 0.5 is a medium, > 0.8 a large effect);
* the share of pixels outside the training 2-98% range, against the 4% expected of data like the
  training data (a sensor, scaling or band-order change moves it far up).

* the population stability index over fixed bins, ``PSI = sum_i (p_i - q_i) ln(p_i / q_i)`` with ``q``
  the training distribution and ``p`` the input's over 12 bins per band (10 equal bins between the
  training 2nd and 98th percentiles, and one on each side). The training distribution comes from the
  raw training windows every network bundle keeps (``calibration.npy``, also used for INT8
  calibration); bundles without them skip the PSI. Common reading (Siddiqi, "Credit Risk
  Scorecards", 2006; Yurdakul, "Statistical properties of population stability index", 2018): below
  0.1 no shift, 0.1-0.25 moderate, above 0.25 a significant shift.

A band is flagged when ``|d|`` exceeds ``smd_threshold`` (default 1.0), the out-of-range share
exceeds ``range_threshold`` (default 0.25) or the PSI exceeds ``psi_threshold`` (default 0.25).
Typical causes: a different sensor or processing level (reflectance x 10000 vs 0-1), bands in
another order, a seasonal or illumination shift.

**Thresholds fitted to the data, so the training data does not cry wolf** (:func:`fit_drift`, at the
end of training). Images of one data set differ from each other: a fixed PSI of 0.25 flags most
photos of a varied set. So the bundle keeps a drift profile (``manifest.drift``): the reference
histograms from :data:`REFERENCE_WINDOWS` random training windows, and thresholds set on a second
sample of training windows shaped like the validation units (:data:`THRESHOLD_WINDOWS`, none over held-out
blocks), each compared with the reference windows that do not overlap it: per figure, the larger of the default above and
:data:`THRESHOLD_MARGIN` times the 99th percentile of that figure (its largest band) over the
sample. The profile also records the false-alarm rate measured on validation windows, data the
thresholds never saw: the share of them that would be flagged. Each is a validation unit as an input
would come: a held-out block with its context, whole, or a ``window``-sided part of it when larger.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from terraseg.data.normalize import NormStats

if TYPE_CHECKING:
    from terraseg.bundle import Bundle
    from terraseg.data.scenes import Scene
from terraseg.data.windows import grid_windows


@dataclass
class DriftReport:
    """Per-band comparison of an input with the training statistics.

    Attributes:
        bands: band names.
        smd: standardised mean difference per band.
        out_of_range: share of sampled
        pixels outside the training 2-98% range per band.
        flagged: names of the bands beyond a threshold.
        pixels: valid pixels sampled.
        psi: population stability index per band (None without training pixels).
    """

    bands: list[str]
    smd: list[float]
    out_of_range: list[float]
    flagged: list[str] = field(default_factory=list)
    pixels: int = 0
    psi: list[float] | None = None

    @property
    def drifted(self) -> bool:
        """Whether any band is flagged."""
        return bool(self.flagged)

    def message(self, name: str) -> str:
        """One line for the CLI: which bands drift and by how much."""
        psi: list[float | None] = list(self.psi) if self.psi else [None] * len(self.bands)
        parts = [
            f"{b} (mean shift {d:+.1f} sd, {o:.0%} outside the training 2-98% range"
            + (f", PSI {p:.2f})" if p is not None else ")")
            for b, d, o, p in zip(self.bands, self.smd, self.out_of_range, psi)
            if b in self.flagged
        ]
        return f"{name}: input differs from the training data in band(s) {', '.join(parts)}; predictions may be unreliable."

    def to_dict(self) -> dict:
        """JSON-ready report."""
        psi: list[float | None] = list(self.psi) if self.psi else [None] * len(self.bands)
        return {
            "drifted": self.drifted,
            "flagged": self.flagged,
            "pixels": self.pixels,
            "bands": {
                b: {"smd": round(d, 3), "out_of_range": round(o, 4)} | ({"psi": round(p, 4)} if p is not None else {})
                for b, d, o, p in zip(self.bands, self.smd, self.out_of_range, psi)
            },
        }


BINS = 10  # equal bins between the training 2nd and 98th percentiles (plus one below and one above)


def bin_edges(stats: NormStats) -> np.ndarray | None:
    """``(C, BINS + 1)`` inner bin edges per band from the training 2-98% range, or None without percentiles.

    Args:
        stats: the training statistics (``low``, ``high``: the 2nd and 98th percentiles).
    """
    if not stats.low or not stats.high:
        return None
    lo, hi = np.asarray(stats.low, np.float64), np.asarray(stats.high, np.float64)
    hi = np.maximum(hi, lo + 1e-9)
    return lo[:, None] + (hi - lo)[:, None] * np.linspace(0, 1, BINS + 1)[None, :]


def band_histograms(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``(C, BINS + 2)`` pixel counts of ``(C, N)`` values over each band's edges (first and last bins open).

    Args:
        x: ``(C, N)`` pixel values.
        edges: ``(C, BINS + 1)`` from :func:`bin_edges`.
    """
    return np.stack(
        [np.bincount(np.searchsorted(e, v, side="right"), minlength=BINS + 2)[: BINS + 2] for e, v in zip(edges, x)]
    ).astype(np.float64)


def window_summary(
    x: np.ndarray, low: np.ndarray, high: np.ndarray, edges: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-band sum, count outside ``[low, high]`` and histogram over ``edges`` of ``(C, N)`` pixel values.

    Integer pixels of at most 16 bits (uint8/uint16/int16 rasters, PNG and JPEG uploads) are first counted
    per distinct value with ``np.bincount`` and the three figures are taken from those counts: the same
    numbers as from the pixels (integer sums are exact in float64); the drift check of a 512x512 PNG upload
    took 1.3 ms this way against 13.8 ms sorting each pixel into its bin (``benchmarks/serve_bench.py passes``,
    AMD EPYC, the demo bundle; :func:`input_drift` passes a window of valid pixels as a view).
    Other dtypes are summarised pixel by pixel.

    Args:
        x: ``(C, N)`` raw pixel values, any dtype.
        low: ``(C,)`` range bounds (training 2nd/98th percentiles).
        high: ``(C,)`` range bounds (training 2nd/98th percentiles).
        edges: ``(C, BINS + 1)`` from :func:`bin_edges`, or None (no histogram).

    Returns:
        ``(sum (C,), outside (C,), counts (C, BINS + 2) or None)``, float64.
    """
    C = x.shape[0]
    if x.dtype.kind in "ui" and x.dtype.itemsize <= 2:
        offset = int(np.iinfo(x.dtype).min)  # int16: shift to non-negative indices
        total, outside = np.zeros(C), np.zeros(C)
        counts = np.zeros((C, BINS + 2)) if edges is not None else None
        for c in range(C):
            per_value = np.bincount((x[c].astype(np.int32) - offset) if offset else x[c])
            values = np.nonzero(per_value)[0]
            k = per_value[values].astype(np.float64)
            v = values.astype(np.float64) + offset
            total[c] = (v * k).sum()
            outside[c] = k[(v < low[c]) | (v > high[c])].sum()
            if counts is not None and edges is not None:
                counts[c] = np.bincount(np.searchsorted(edges[c], v, side="right"), weights=k, minlength=BINS + 2)[: BINS + 2]
        return total, outside, counts
    x = x.astype(np.float64)
    return (
        x.sum(axis=1),
        ((x < low[:, None]) | (x > high[:, None])).sum(axis=1).astype(np.float64),
        band_histograms(x, edges) if edges is not None else None,
    )


def population_stability(actual: np.ndarray, expected: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """Per-band PSI of ``(C, B)`` counts against ``(C, B)`` reference counts (proportions floored at ``floor``).

    Args:
        actual: the input's counts.
        expected: the training counts.
        floor: smallest proportion (empty bins).

    Returns:
        ``(C,)`` PSI per band.
    """
    p = np.maximum(actual / np.maximum(actual.sum(1, keepdims=True), 1), floor)
    q = np.maximum(expected / np.maximum(expected.sum(1, keepdims=True), 1), floor)
    return ((p - q) * np.log(p / q)).sum(1)


# a served bundle's reference histograms, computed once (entries go with their bundle)
_REFERENCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def training_histograms(bundle, stats: NormStats) -> np.ndarray | None:
    """``(C, BINS + 2)`` counts of the bundle's raw training windows (``calibration.npy``), cached per bundle; None without them.

    Args:
        bundle: the loaded bundle.
        stats: its training statistics (the bin edges).
    """
    if bundle in _REFERENCES:
        return _REFERENCES[bundle]
    import io

    from terraseg.bundle import CALIBRATION

    ref = None
    raw = getattr(bundle, "extras", {}).get(CALIBRATION)
    edges = bin_edges(stats)
    if raw is not None and edges is not None:
        x = np.load(io.BytesIO(raw), allow_pickle=False)
        if x.ndim == 4 and x.shape[1] == edges.shape[0]:
            x = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1).astype(np.float64)
            nodata = getattr(bundle.manifest.input, "nodata", None)
            if nodata is not None:
                x = x[:, ~(x == nodata).all(axis=0)]
            ref = band_histograms(x, edges) if x.shape[1] else None
    _REFERENCES[bundle] = ref
    return ref


def input_drift(
    scene,
    stats: NormStats,
    band_names: list[str] | None = None,
    max_windows: int = 16,
    window: int = 256,
    smd_threshold: float = 1.0,
    range_threshold: float = 0.25,
    reference: np.ndarray | None = None,
    psi_threshold: float = 0.25,
) -> DriftReport | None:
    """Compare ``scene``'s pixels with the training statistics (None when the bundle has none to compare with).

    Args:
        scene: the input (raw pixels).
        stats: the bundle's training statistics.
        band_names: names for the report (default B1, B2...).
        max_windows: the sample, spread evenly over the scene (at most ``max_windows`` windows of ``window`` pixels).
        window: the sample, spread evenly over the scene (at most ``max_windows`` windows of ``window`` pixels).
        smd_threshold: flagging thresholds (module docstring).
        range_threshold: flagging thresholds (module docstring).
        psi_threshold: flagging thresholds (module docstring).
        reference: ``(C, BINS + 2)`` training counts (:func:`training_histograms`) for the PSI; None skips it.

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
    edges = bin_edges(stats) if reference is not None else None
    counts = np.zeros((C, BINS + 2)) if edges is not None else None
    for w in wins[::step][:max_windows]:
        r = scene.read(w.row, w.col, w.height, w.width, labels=False)
        # every pixel valid (the usual upload): a view of the window; else a copy of the valid pixels
        x = r.image.reshape(r.image.shape[0], -1) if r.valid.all() else r.image[:, r.valid]
        if x.size == 0:
            continue
        total, outside, hist = window_summary(x, low, high, edges)
        s1 += total
        out += outside
        n += x.shape[1]
        if counts is not None and hist is not None:
            counts += hist
    if n == 0:
        return None
    mean = s1 / n
    smd = (mean - np.asarray(stats.mean)) / np.maximum(np.asarray(stats.std), 1e-12)
    oor = out / n
    names = band_names or [f"B{k + 1}" for k in range(C)]
    psi = population_stability(counts, reference) if counts is not None and reference is not None else None
    flagged = [
        b
        for k, (b, d, o) in enumerate(zip(names, smd, oor))
        if abs(d) > smd_threshold or o > range_threshold or (psi is not None and psi[k] > psi_threshold)
    ]
    return DriftReport(
        names,
        [float(v) for v in smd],
        [float(v) for v in oor],
        flagged,
        int(n),
        [float(v) for v in psi] if psi is not None else None,
    )


REFERENCE_WINDOWS = 64  # random training windows whose pixels make the reference histograms
THRESHOLD_WINDOWS = 256  # a second sample of training windows, shaped like the validation units, that sets the thresholds
VALIDATION_WINDOWS = 200  # validation windows on which the false-alarm rate is measured
THRESHOLD_MARGIN = 1.2
MAX_HELD_OUT_SHARE = 0.25  # a threshold window may overlap held-out blocks (and their buffer) by at most this share
DEFAULTS = {"smd": 1.0, "range": 0.25, "psi": 0.25}


def _held_out_share(scene, row: int, col: int, h: int, w: int) -> float:
    """Share of a window covered by the scene's held-out blocks and buffers (``scene.exclude``; 0 without)."""
    covered = 0
    for r in getattr(scene, "exclude", ()) or ():
        dh = min(row + h, r.row_off + r.height) - max(row, r.row_off)
        dw = min(col + w, r.col_off + r.width) - max(col, r.col_off)
        covered += max(dh, 0) * max(dw, 0)
    return min(covered / max(h * w, 1), 1.0)


def _windows(scenes, n: int, shapes: list[tuple[int, int]] | int, rng: np.random.Generator) -> list[tuple]:
    """Up to ``n`` random windows: ``(scene, row, col, height, width, pixels)``, pixels the valid raw ``(C, k)`` values.

    Scenes are drawn in proportion to their area, offsets uniformly; window ``i`` has shape
    ``shapes[i % len(shapes)]`` (clipped to its scene), or, when ``shapes`` is a window side, the scene's
    own shape up to that side (a validation unit: a held-out block with its context, whole when smaller). Windows that overlap held-out blocks by more than
    :data:`MAX_HELD_OUT_SHARE` are drawn again (at most 20 times), so a training sample never measures
    the validation imagery; windows with under 1% valid pixels are dropped.
    """
    from terraseg.data.windows import random_offset

    if not scenes or not shapes:
        return []
    area = np.array([s.height * s.width for s in scenes], dtype=np.float64)
    out = []
    for k, i in enumerate(rng.choice(len(scenes), size=n, p=area / area.sum())):
        s = scenes[i]
        h, w = shapes[k % len(shapes)] if isinstance(shapes, list) else (shapes, shapes)
        h, w = min(h, s.height), min(w, s.width)
        for _ in range(20):
            row, col = random_offset(rng, s.height, h), random_offset(rng, s.width, w)
            if _held_out_share(s, row, col, h, w) <= MAX_HELD_OUT_SHARE:
                break
        else:
            continue
        r = s.read(row, col, h, w, labels=False)
        x = r.image[:, r.valid].astype(np.float64)
        if x.shape[1] >= 0.01 * h * w and x.shape[1] > 0:
            out.append((s, row, col, h, w, x))
    return out


def _overlap(a: tuple, b: tuple) -> int:
    """Pixels shared by two windows of :func:`_windows` (0 on different scenes)."""
    if a[0] is not b[0]:
        return 0
    dh = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    dw = min(a[2] + a[4], b[2] + b[4]) - max(a[2], b[2])
    return max(dh, 0) * max(dw, 0)


def _figures(x: np.ndarray, stats: NormStats, edges: np.ndarray, reference: np.ndarray) -> dict[str, np.ndarray]:
    """Per-band |standardised mean difference|, out-of-range share and PSI of ``(C, k)`` pixels."""
    mean, std = np.asarray(stats.mean), np.maximum(np.asarray(stats.std), 1e-12)
    low, high = np.asarray(stats.low)[:, None], np.asarray(stats.high)[:, None]
    return {
        "smd": np.abs((x.mean(1) - mean) / std),
        "range": ((x < low) | (x > high)).mean(1),
        "psi": population_stability(band_histograms(x, edges), reference),
    }


LEAVE_OUT_MIN = 8  # reference windows kept at least, when fewer than this miss a threshold window


MIN_WINDOW = 16  # the smallest window side a profile is fitted on (tiny scenes)


def fit_drift(train_scenes: list, val_scenes: list, stats: NormStats, window: int, seed: int = 0) -> dict | None:
    """The bundle's drift profile: reference histograms, fitted thresholds and the false-alarm rate on validation windows.

    A new input is imagery the reference never saw; so each threshold window is compared with the
    reference windows that do not overlap it (leave-out; when fewer than :data:`LEAVE_OUT_MIN` miss it,
    the ones overlapping it least), never with a reference that contains its own pixels. The threshold
    windows have the shapes of the validation windows (a validation block with its context is often
    smaller than ``window``, and a small window varies more), are drawn over the whole training area,
    and never over held-out blocks. The false-alarm rate is measured on windows of the validation
    scenes, each the shape of the scene it is drawn from up to ``window`` (a held-out block with its
    context is one unit of validation imagery, whole). A window varies more than a whole input, which ``predict`` samples
    with up to 16 windows, so thresholds fitted on windows are conservative for whole scenes.

    Args:
        train_scenes: training scenes (raw pixels).
        val_scenes: validation scenes (the false-alarm measurement; may be empty).
        stats: the training statistics (mean, std, 2nd/98th percentiles).
        window: the window side in pixels (a unit of input); halved, down to :data:`MIN_WINDOW`, while scenes are too small
            for windows of that side clear of the held-out blocks (the profile records the side used).
        seed: sampling seed.

    Returns:
        ``{"reference": (C, BINS + 2) counts, "thresholds": {"smd", "range", "psi"}, "false_alarm_rate": share or None,
            "validation_windows": n, "threshold_windows": n, "reference_pixels": n}``, or None for 'none' statistics.
    """
    if stats.method == "none" or not stats.mean or not stats.std or not stats.low or not stats.high:
        return None
    rng = np.random.default_rng(seed)
    edges = bin_edges(stats)
    assert edges is not None  # the percentiles are there (checked above)
    ref_windows = _windows(train_scenes, REFERENCE_WINDOWS, [(window, window)], rng)
    while not ref_windows and window > MIN_WINDOW:  # scenes too small for windows clear of the held-out blocks: smaller ones
        window = max(window // 2, MIN_WINDOW)
        ref_windows = _windows(train_scenes, REFERENCE_WINDOWS, [(window, window)], rng)
    if not ref_windows:
        return None
    ref_counts = np.stack([band_histograms(w[5], edges) for w in ref_windows])
    reference = ref_counts.sum(0)
    val_shapes = [(min(window, s.height), min(window, s.width)) for s in val_scenes] or [(window, window)]
    figs = []
    for t in _windows(train_scenes, THRESHOLD_WINDOWS, val_shapes, rng):
        shared = np.array([_overlap(t, r) for r in ref_windows])
        keep = shared == 0
        if keep.sum() < min(LEAVE_OUT_MIN, len(ref_windows)):
            keep = shared <= np.sort(shared)[min(LEAVE_OUT_MIN, len(ref_windows)) - 1]
        figs.append(_figures(t[5], stats, edges, ref_counts[keep].sum(0)))
    thresholds = dict(DEFAULTS)
    for k in thresholds:
        if figs:
            q = float(np.quantile([f[k].max() for f in figs], 0.99))
            thresholds[k] = max(DEFAULTS[k], THRESHOLD_MARGIN * q)
    val = [_figures(w[5], stats, edges, reference) for w in _windows(val_scenes, VALIDATION_WINDOWS, window, rng)]
    flagged = [any(f[k].max() > thresholds[k] for k in thresholds) for f in val]
    return {
        "reference": reference.round(1).tolist(),
        "thresholds": {k: round(v, 4) for k, v in thresholds.items()},
        "false_alarm_rate": round(float(np.mean(flagged)), 4) if val else None,
        "validation_windows": len(val),
        "threshold_windows": len(figs),
        "reference_pixels": int(sum(w[5].shape[1] for w in ref_windows)),
        "window": window,
    }


def bundle_drift(bundle: Bundle, scene: Scene) -> DriftReport | None:
    """Compare an input with the bundle's training data: the fitted profile (``manifest.drift``) when the bundle has one.

    Bundles trained before drift profiles use the raw training windows they keep (``calibration.npy``)
    and the default thresholds.

    Args:
        bundle: the loaded bundle.
        scene: the input, opened for it.

    Returns:
        :class:`DriftReport`, or None when the bundle holds nothing to compare with.
    """
    names = bundle.manifest.input.band_names
    profile = getattr(bundle.manifest, "drift", None)
    if profile:
        t = profile["thresholds"]
        return input_drift(
            scene,
            bundle.stats,
            names,
            reference=np.asarray(profile["reference"], dtype=np.float64),
            smd_threshold=t["smd"],
            range_threshold=t["range"],
            psi_threshold=t["psi"],
        )
    return input_drift(scene, bundle.stats, names, reference=training_histograms(bundle, bundle.stats))


__all__ = [
    "DriftReport",
    "bundle_drift",
    "fit_drift",
    "band_histograms",
    "bin_edges",
    "input_drift",
    "population_stability",
    "training_histograms",
    "window_summary",
]
