"""Band and class statistics ("summarize") and per-pixel tables ("flatten"), streamed by blocks.

Pass 1 reads every block once and merges per-block count/mean/M2 with Chan et al.'s parallel
update ("Updating formulae and a pairwise algorithm for computing sample variances", 1979), plus
min/max, nodata counts and class pixel counts. Pass 2 builds per-band histograms between the global
min and max: integer bands whose range fits 65,536 bins get one bin per value, so their
percentiles are exact; other bands get ``bins`` bins and percentiles interpolated within a bin
(error at most one bin width). Pass 2 also writes the optional flat table. Memory is bounded by one
block, whatever the scene size.

Suggested class weights are given two ways: inverse frequency (normalised to mean 1) and median
frequency balancing (Eigen & Fergus, "Predicting Depth, Surface Normals and Semantic Labels with a
Common Multi-Scale Convolutional Architecture", ICCV 2015).

``stats.json`` holds a ``normalization`` entry in the bundle's :class:`NormStats` form; a training
config can point ``data.normalization.stats_file`` at it to use these statistics.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from terraseg import progress
from terraseg.config.prep import StatsConfig
from terraseg.data.normalize import NormStats
from terraseg.data.scenes import Scene
from terraseg.data.windows import grid_windows
from terraseg.data.sources import labelled_scene, labels_for
from terraseg.errors import InputFileError
from terraseg.io.atomic import atomic_path, write_text_atomic
from terraseg.settings import resolve_data_path

log = logging.getLogger(__name__)


@dataclass
class _Band:
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = np.inf
    hi: float = -np.inf
    hist: np.ndarray | None = None
    edges: np.ndarray | None = None
    exact: bool = False

    def update(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        x = x.astype(np.float64)
        n_b, mean_b = x.size, float(x.mean())
        m2_b = float(((x - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta**2 * self.n * n_b / n
        self.n = n
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))

    def init_hist(self, dtype: np.dtype, bins: int) -> None:
        if self.n == 0:
            return
        span = self.hi - self.lo
        self.exact = np.issubdtype(dtype, np.integer) and span < 65536
        nb = int(span) + 1 if self.exact else bins
        self.hist = np.zeros(nb, dtype=np.int64)
        self.edges = (np.arange(nb + 1) + self.lo - 0.5) if self.exact else np.linspace(self.lo, self.hi if span else self.lo + 1, nb + 1)

    def add_hist(self, x: np.ndarray) -> None:
        if self.hist is None or x.size == 0:
            return
        if self.exact:
            self.hist += np.bincount((x.astype(np.int64) - int(self.lo)).ravel(), minlength=len(self.hist))
        else:
            self.hist += np.histogram(x, bins=self.edges)[0]

    def percentile(self, q: float) -> float:
        assert self.hist is not None and self.edges is not None
        cdf = np.cumsum(self.hist)
        target = q / 100.0 * (cdf[-1] - 1)
        i = int(np.searchsorted(cdf, target, side="right"))
        if self.exact:
            return float(self.lo + i)
        before = cdf[i - 1] if i else 0
        frac = (target - before) / max(self.hist[i], 1)
        return float(self.edges[i] + frac * (self.edges[i + 1] - self.edges[i]))


@dataclass
class StatsResult:
    """Paths written by :func:`compute_statistics` and the statistics themselves."""

    stats_path: Path
    histograms: list[Path]
    table: Path | None
    stats: dict[str, Any] = field(default_factory=dict)


def class_weights(counts: np.ndarray) -> dict[str, list[float]]:
    """Suggested loss weights for classes with pixel ``counts`` (classes with no pixel get 0).

    Args:
        counts: ``(K,)`` pixel counts per class.

    Returns:
        ``inverse_frequency`` (normalised to mean 1 over present classes) and ``median_frequency``
        (median(freq) / freq, Eigen & Fergus 2015).
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    freq = np.where(present, counts / max(counts.sum(), 1), 0)
    inv = np.where(present, 1 / np.where(present, freq, 1), 0)
    inv = inv / inv[present].mean() if present.any() else inv
    med = np.where(present, np.median(freq[present]) / np.where(present, freq, 1), 0) if present.any() else freq
    return {"inverse_frequency": [round(float(v), 6) for v in inv], "median_frequency": [round(float(v), 6) for v in med]}


class _TableWriter:
    """Streams rows to ``tmp`` as Parquet (pyarrow ParquetWriter) or CSV, chosen by ``tmp``'s suffix.

    The caller owns atomicity (``tmp`` comes from :func:`terraseg.io.atomic.atomic_path`)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self._pq = None
        self._first = True

    def write(self, columns: dict[str, np.ndarray]) -> None:
        if self.tmp.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table(columns)
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.tmp, table.schema, compression="zstd")
            self._pq.write_table(table)
        else:
            import pandas as pd

            pd.DataFrame(columns).to_csv(self.tmp, mode="w" if self._first else "a", header=self._first, index=False)
        self._first = False

    def close(self) -> None:
        if self._pq is not None:
            self._pq.close()
        if self._first and self.tmp.suffix == ".csv":
            self.tmp.write_text("")


def _table_columns(scene: Scene, r0: int, c0: int, image: np.ndarray, keep: np.ndarray, mask, names: list[str], to_lonlat) -> dict[str, np.ndarray]:
    rows, cols = np.nonzero(keep)
    t = scene.transform
    xs = t.c + (cols + c0 + 0.5) * t.a + (rows + r0 + 0.5) * t.b
    ys = t.f + (cols + c0 + 0.5) * t.d + (rows + r0 + 0.5) * t.e
    columns: dict[str, np.ndarray] = {"scene": np.full(len(rows), scene.name), "row": rows + r0, "col": cols + c0, "x": xs, "y": ys}
    if to_lonlat is not None:
        lon, lat = to_lonlat.transform(xs, ys)
        columns["lon"], columns["lat"] = np.asarray(lon), np.asarray(lat)
    for k, name in enumerate(names):
        columns[name] = image[k][keep]
    if mask is not None:
        columns["label"] = mask[keep].astype(np.int16)
    return columns


def compute_statistics(cfg: StatsConfig) -> StatsResult:
    """Summarise images band by band (and their labels class by class); optionally flatten to a table.

    Writes ``stats.json`` and ``histogram_<band>.png`` into ``cfg.out_dir``, and the per-pixel
    table to ``cfg.flatten`` (columns: scene, row, col, x, y in the CRS (pixel centres), lon, lat
    (EPSG:4326) when georeferenced, one column per band, label when labels are given).

    Args:
        cfg: :class:`terraseg.config.prep.StatsConfig` (images, labels, bands, bins, table options).

    Returns:
        :class:`StatsResult`: paths written and the statistics (band values in raster units).

    Raises:
        InputFileError: unreadable images/labels, images with different band counts, or no valid pixel.
    """
    scenes = [labelled_scene(p, lab, cfg.bands, cfg.ignore_index)
              for p, lab in zip(cfg.images, labels_for(cfg.images, cfg.labels))]
    count = scenes[0].count
    for s in scenes[1:]:
        if s.count != count:
            raise InputFileError(f"{s.path}: image has {s.count} bands but {scenes[0].path} has {count}.")
    names = list(cfg.band_names or scenes[0].band_descriptions() or [f"band_{k + 1}" for k in range(count)])
    if len(names) != count:
        raise InputFileError(f"{len(names)} band names given for images with {count} bands.")
    bands = [_Band() for _ in range(count)]
    total = nodata = 0
    class_counts = np.zeros(0, dtype=np.int64)
    pixels = sum(s.height * s.width for s in scenes)
    with progress.task("statistics, pass 1 of 2", pixels, "px") as advance:
        for s in scenes:  # pass 1: moments, range, nodata, classes
            for r0, c0, h, w in grid_windows(s.height, s.width, cfg.block, edge="clip"):
                r = s.read(r0, c0, h, w)
                advance(h * w)
                total += h * w
                nodata += int((~r.valid).sum())
                for k, b in enumerate(bands):
                    b.update(r.image[k][r.valid])
                if r.mask is not None:
                    known = r.mask[(r.mask != cfg.ignore_index) & r.valid]
                    bc = np.bincount(known.ravel())
                    if len(bc) > len(class_counts):
                        class_counts = np.pad(class_counts, (0, len(bc) - len(class_counts)))
                    class_counts[: len(bc)] += bc
    if bands[0].n == 0:
        raise InputFileError(f"{scenes[0].path}: no valid (non-nodata) pixel to compute statistics from.")
    dtype = np.dtype(scenes[0].dtype)
    for b in bands:
        b.init_hist(dtype, cfg.bins)
    rng = np.random.default_rng(cfg.seed)
    with contextlib.ExitStack() as stack:
        writer = _TableWriter(stack.enter_context(atomic_path(cfg.flatten))) if cfg.flatten else None
        if writer is not None:
            stack.callback(writer.close)  # runs before atomic_path renames (or deletes) the file
        advance = stack.enter_context(progress.task("statistics, pass 2 of 2", pixels, "px"))
        for s in scenes:  # pass 2: histograms, flat table
            to_lonlat = None
            if writer is not None and s.crs is not None:
                from pyproj import Transformer

                to_lonlat = Transformer.from_crs(s.crs, "EPSG:4326", always_xy=True)
            for r0, c0, h, w in grid_windows(s.height, s.width, cfg.block, edge="clip"):
                r = s.read(r0, c0, h, w)
                advance(h * w)
                for k, b in enumerate(bands):
                    b.add_hist(r.image[k][r.valid])
                if writer is not None:
                    keep = np.ones_like(r.valid) if cfg.include_nodata else r.valid.copy()
                    if cfg.sample_fraction < 1:
                        keep &= rng.random(keep.shape) < cfg.sample_fraction
                    if keep.any():
                        writer.write(_table_columns(s, r0, c0, r.image, keep, r.mask, names, to_lonlat))
    out = Path(cfg.out_dir)
    band_stats = []
    for k, b in enumerate(bands):
        std = float(np.sqrt(b.m2 / b.n))
        band_stats.append({
            "name": names[k], "index": (cfg.bands or list(range(1, count + 1)))[k], "valid_pixels": b.n,
            "mean": b.mean, "std": std, "min": b.lo, "max": b.hi,
            "percentiles": {f"{q:g}": b.percentile(q) for q in cfg.percentiles}, "percentiles_exact": b.exact,
        })
    norm = NormStats(
        method="meanstd", mean=[b["mean"] for b in band_stats], std=[b["std"] or 1.0 for b in band_stats],
        low=[bands[k].percentile(2.0) for k in range(count)], high=[bands[k].percentile(98.0) for k in range(count)],
    )
    norm.high = [h if h > lo else lo + 1.0 for lo, h in zip(norm.low, norm.high)]
    stats: dict[str, Any] = {
        "images": [s.path for s in scenes], "dtype": dtype.name, "pixels": total, "nodata_fraction": nodata / max(total, 1),
        "bands": band_stats, "normalization": norm.to_dict(),
    }
    if class_counts.size:
        freq = class_counts / max(class_counts.sum(), 1)
        stats["classes"] = {
            "pixels": class_counts.tolist(), "frequency": [round(float(f), 8) for f in freq], **class_weights(class_counts),
        }
    hists = [_histogram_png(out / f"histogram_{names[k]}.png", bands[k], names[k]) for k in range(count)]
    stats_path = write_text_atomic(out / "stats.json", json.dumps(stats, indent=2))  # last: its presence means complete
    return StatsResult(stats_path, hists, Path(cfg.flatten) if cfg.flatten else None, stats)


def _histogram_png(path: Path, b: _Band, name: str, max_bars: int = 256) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert b.hist is not None and b.edges is not None
    hist, edges = b.hist, b.edges
    if len(hist) > max_bars:  # merge neighbouring bins for display
        f = int(np.ceil(len(hist) / max_bars))
        pad = (-len(hist)) % f
        hist = np.pad(hist, (0, pad)).reshape(-1, f).sum(1)
        edges = np.append(edges[::f], edges[-1])[: len(hist) + 1]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.bar(edges[:-1], hist, width=np.diff(edges), align="edge", color="#4477aa")
    ax.set_title(f"{name}: mean {b.mean:.4g}, std {np.sqrt(b.m2 / b.n):.4g}")
    ax.set_xlabel("value")
    ax.set_ylabel("pixels")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def load_norm_stats(path: str | Path) -> NormStats:
    """Normalisation statistics from a ``stats.json`` written by :func:`compute_statistics` (or a bare NormStats dict).

    Args:
        path: ``stats.json`` (its ``normalization`` entry is used) or a NormStats JSON.

    Returns:
        :class:`NormStats`.

    Raises:
        InputFileError: missing or malformed file.
    """
    p = resolve_data_path(path)
    try:
        d = json.loads(Path(p).read_text())
        return NormStats.from_dict(d.get("normalization", d))
    except FileNotFoundError:
        raise InputFileError(f"{p}: statistics file not found.") from None
    except (ValueError, TypeError, AttributeError) as e:
        raise InputFileError(f"{p}: not a terraseg statistics file ({e}).") from None
