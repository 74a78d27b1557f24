"""Band and class statistics ("summarize") and per-pixel tables ("flatten"), streamed once by blocks.

A decimated read of every scene (at most 1 Mpx each) fixes each band's histogram range first. Then
one pass reads every block once and updates, for all bands at once (vectorised over bands):
count/mean/M2 merged with Chan et al.'s parallel update ("Updating formulae and a pairwise algorithm
for computing sample variances", 1979), exact min/max, nodata counts, class pixel counts, and the
histograms: integer bands whose range fits :data:`EXACT_BINS` bins get one bin per value (exact
percentiles); other bands ``bins`` bins between the overview's range (values beyond it fall in the end
bins; percentiles interpolated within a bin). The same pass writes the optional flat table. Memory is
one block plus O(bands x bins), whatever the scene size; a 224-band hyperspectral cube costs what its
bytes cost to read.

One figure, ``bands.png``: histograms as small multiples for up to 16 bands, else a spectral profile
(mean, standard deviation and 2-98% range per band). Outputs are staged in a hidden folder and moved
into place together at the end (``stats.json`` last), so an interrupted run leaves none of them.

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
from terraseg.data.sources import labelled_scene, labels_for
from terraseg.data.windows import grid_windows
from terraseg.errors import InputFileError
from terraseg.io.atomic import atomic_path
from terraseg.settings import resolve_data_path

log = logging.getLogger(__name__)


EXACT_BINS = 4096  # integer bands spanning at most this many values get one histogram bin per value


class _Bands:
    """Streaming statistics of C bands at once: moments, range and histograms (module docstring).

    Args:
        lo: ``(C,)`` histogram range per band (from the overview).
        hi: ``(C,)`` histogram range per band (from the overview).
        integer: the data are integers.
        bins: bins per band for non-exact bands.
    """

    def __init__(self, lo: np.ndarray, hi: np.ndarray, integer: bool, bins: int) -> None:
        C = len(lo)
        self.n = np.zeros(C, dtype=np.int64)
        self.mean = np.zeros(C)
        self.m2 = np.zeros(C)
        self.lo, self.hi = np.full(C, np.inf), np.full(C, -np.inf)
        span = hi - lo
        self.exact = bool(integer and span.max(initial=0) < EXACT_BINS)
        self.nbins = int(span.max(initial=0)) + 1 if self.exact else bins
        self.h_lo = lo.astype(np.float64) - (0.5 if self.exact else 0.0)
        width = np.ones(C) if self.exact else np.where(span > 0, span / bins, 1.0)
        self.width = width
        self.hist = np.zeros((C, self.nbins), dtype=np.int64)

    def update(self, x: np.ndarray) -> None:
        """Add ``(C, n)`` valid pixel values."""
        if x.shape[1] == 0:
            return
        x = x.astype(np.float64, copy=False)
        n_b = x.shape[1]
        mean_b = x.mean(1)
        m2_b = ((x - mean_b[:, None]) ** 2).sum(1)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta**2 * self.n * n_b / n
        self.n = n
        self.lo, self.hi = np.minimum(self.lo, x.min(1)), np.maximum(self.hi, x.max(1))
        idx = np.clip(((x - self.h_lo[:, None]) / self.width[:, None]).astype(np.int64), 0, self.nbins - 1)
        idx += (np.arange(len(x)) * self.nbins)[:, None]
        self.hist += np.bincount(idx.ravel(), minlength=self.hist.size).reshape(self.hist.shape)

    def std(self) -> np.ndarray:
        """Population standard deviation per band."""
        return np.sqrt(self.m2 / np.maximum(self.n, 1))

    def edges(self, k: int) -> np.ndarray:
        """Bin edges of band ``k``."""
        return self.h_lo[k] + self.width[k] * np.arange(self.nbins + 1)

    def percentile(self, k: int, q: float) -> float:
        """The ``q``-th percentile of band ``k`` from its histogram (exact for exact bands), within the band's min and max."""
        hist = self.hist[k]
        cdf = np.cumsum(hist)
        target = q / 100.0 * (cdf[-1] - 1)
        i = int(np.searchsorted(cdf, target, side="right"))
        if self.exact:
            v = float(self.h_lo[k] + 0.5 + i)
        else:
            before = cdf[i - 1] if i else 0
            frac = (target - before) / max(hist[i], 1)
            v = float(self.h_lo[k] + self.width[k] * (i + frac))
        return float(np.clip(v, self.lo[k], self.hi[k]))


@dataclass
class StatsResult:
    """Paths written by :func:`compute_statistics` and the statistics themselves."""

    stats_path: Path | None  # None: no out_dir was given, nothing written
    histograms: list[Path]  # the one figure (bands.png)
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
        self._pq: Any = None  # pyarrow's ParquetWriter, opened by the first batch
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


def _table_columns(
    scene: Scene, r0: int, c0: int, image: np.ndarray, keep: np.ndarray, mask, names: list[str], to_lonlat
) -> dict[str, np.ndarray]:
    rows, cols = np.nonzero(keep)
    t = scene.transform
    xs = t.c + (cols + c0 + 0.5) * t.a + (rows + r0 + 0.5) * t.b
    ys = t.f + (cols + c0 + 0.5) * t.d + (rows + r0 + 0.5) * t.e
    columns: dict[str, np.ndarray] = {
        "scene": np.full(len(rows), scene.name),
        "row": rows + r0,
        "col": cols + c0,
        "x": xs,
        "y": ys,
    }
    if to_lonlat is not None:
        lon, lat = to_lonlat.transform(xs, ys)
        columns["lon"], columns["lat"] = np.asarray(lon), np.asarray(lat)
    for k, name in enumerate(names):
        columns[name] = image[k][keep]
    if mask is not None:
        columns["label"] = mask[keep].astype(np.int16)
    return columns


CHUNK_VALUES = 8_000_000  # band values handled at once (about 64 MB as float64): memory is O(bands), not O(bands x block)


def _ranges(scenes: list[Scene], count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-band value range of decimated reads of the scenes (at most 1 Mpx, and :data:`CHUNK_VALUES` values, each)."""
    lo, hi = np.full(count, np.inf), np.full(count, -np.inf)
    pixels = int(min(1 << 20, CHUNK_VALUES // max(count, 1)))
    for s in scenes:
        ov = s._overview(pixels) if hasattr(s, "_overview") else s.read(0, 0, s.height, s.width, labels=False)
        x = ov.image[:, ov.valid]
        if x.shape[1]:
            lo, hi = np.minimum(lo, x.min(1)), np.maximum(hi, x.max(1))
    bad = ~np.isfinite(lo)
    lo[bad], hi[bad] = 0.0, 1.0
    return lo.astype(np.float64), hi.astype(np.float64)


def compute_statistics(cfg: StatsConfig) -> StatsResult:
    """Summarise images band by band (and their labels class by class); optionally flatten to a table.

    Writes ``stats.json`` and one figure, ``bands.png``, into ``cfg.out_dir`` (together, at the end),
    and the per-pixel table to ``cfg.flatten`` (columns: scene, row, col, x, y in the CRS (pixel
    centres), lon, lat (EPSG:4326) when georeferenced, one column per band, label when labels are given).

    Args:
        cfg: :class:`terraseg.config.prep.StatsConfig` (images, labels, bands, bins, table options).

    Returns:
        :class:`StatsResult`: paths written and the statistics (band values in raster units).

    Raises:
        InputFileError: unreadable images/labels, images with different band counts, or no valid pixel.
        KeyboardInterrupt: a stop was requested (SIGTERM/SIGINT); nothing is left under a final name.
    """
    from terraseg import interrupt

    scenes, names = _scenes(cfg)
    count = len(names)
    dtype = np.dtype(scenes[0].dtype)
    bands = _Bands(*_ranges(scenes, count), bool(np.issubdtype(dtype, np.integer)), cfg.bins)
    total = nodata = 0
    class_counts = np.zeros(0, dtype=np.int64)
    pixels = sum(s.height * s.width for s in scenes)
    block = int(min(cfg.block, max(16, np.sqrt(CHUNK_VALUES / count))))  # a 224-band cube reads 189 px blocks
    rng = np.random.default_rng(cfg.seed)
    with contextlib.ExitStack() as stack:
        writer = _TableWriter(stack.enter_context(atomic_path(cfg.flatten))) if cfg.flatten else None
        if writer is not None:
            stack.callback(writer.close)  # runs before atomic_path renames (or deletes) the file
        advance = stack.enter_context(progress.task("statistics", pixels, "px"))
        for s in scenes:  # one pass: moments, range, histograms, nodata, classes, flat table
            to_lonlat = None
            if writer is not None and s.crs is not None:
                from pyproj import Transformer

                to_lonlat = Transformer.from_crs(s.crs, "EPSG:4326", always_xy=True)
            for r0, c0, h, w in grid_windows(s.height, s.width, block, edge="clip"):
                r = s.read(r0, c0, h, w)
                advance(h * w)
                total += h * w
                nodata += int((~r.valid).sum())
                bands.update(r.image[:, r.valid])
                if r.mask is not None:
                    known = r.mask[(r.mask != cfg.ignore_index) & r.valid]
                    bc = np.bincount(known.ravel())
                    if len(bc) > len(class_counts):
                        class_counts = np.pad(class_counts, (0, len(bc) - len(class_counts)))
                    class_counts[: len(bc)] += bc
                if writer is not None:
                    keep = np.ones_like(r.valid) if cfg.include_nodata else r.valid.copy()
                    if cfg.sample_fraction < 1:
                        keep &= rng.random(keep.shape) < cfg.sample_fraction
                    if keep.any():
                        writer.write(_table_columns(s, r0, c0, r.image, keep, r.mask, names, to_lonlat))
        if bands.n[0] == 0:
            raise InputFileError(f"{scenes[0].path}: no valid (non-nodata) pixel to compute statistics from.")
        interrupt.check()
    stats, norm = _summary(cfg, scenes, bands, names, dtype, total, nodata, class_counts)
    if cfg.out_dir is None:
        return StatsResult(None, [], Path(cfg.flatten) if cfg.flatten else None, stats)
    from terraseg.io.atomic import staged_dir

    out = Path(cfg.out_dir)
    with staged_dir(out) as staging:  # a folder that cannot be made (a file in the way): one line, nothing written
        _bands_figure(staging / "bands.png", bands, names, norm)
        (staging / "stats.json").write_text(json.dumps(stats, indent=2))
        interrupt.check()  # a stop swallowed while plotting (matplotlib finalisers) still stops the run here
        # moved in name order: bands.png, then stats.json, whose presence means complete
    return StatsResult(out / "stats.json", [out / "bands.png"], Path(cfg.flatten) if cfg.flatten else None, stats)


def _scenes(cfg: StatsConfig) -> tuple[list, list[str]]:
    """The images (with their labels) as scenes of one band count, and the band names."""
    scenes = [
        labelled_scene(p, lab, cfg.bands, cfg.ignore_index) for p, lab in zip(cfg.images, labels_for(cfg.images, cfg.labels))
    ]
    count = scenes[0].count
    for s in scenes[1:]:
        if s.count != count:
            raise InputFileError(f"{s.path}: image has {s.count} bands but {scenes[0].path} has {count}.")
    names = list(cfg.band_names or scenes[0].band_descriptions() or [f"band_{k + 1}" for k in range(count)])
    if len(names) != count:
        raise InputFileError(f"{len(names)} band names given for images with {count} bands.")
    return scenes, names


def _summary(
    cfg: StatsConfig,
    scenes: list,
    bands: _Bands,
    names: list[str],
    dtype: np.dtype,
    total: int,
    nodata: int,
    class_counts: np.ndarray,
) -> tuple[dict[str, Any], NormStats]:
    """``stats.json``'s content (per band: moments, range, percentiles; classes: pixels, frequencies, weights)
    and the mean/std normalisation with its 2-98% range."""
    count = len(names)
    std = bands.std()
    band_stats: list[dict[str, Any]] = [
        {
            "name": names[k],
            "index": (cfg.bands or list(range(1, count + 1)))[k],
            "valid_pixels": int(bands.n[k]),
            "mean": float(bands.mean[k]),
            "std": float(std[k]),
            "min": float(bands.lo[k]),
            "max": float(bands.hi[k]),
            "percentiles": {f"{q:g}": bands.percentile(k, q) for q in cfg.percentiles},
            "percentiles_exact": bands.exact,
        }
        for k in range(count)
    ]
    norm = NormStats(
        method="meanstd",
        mean=[b["mean"] for b in band_stats],
        std=[b["std"] or 1.0 for b in band_stats],
        low=[bands.percentile(k, 2.0) for k in range(count)],
        high=[bands.percentile(k, 98.0) for k in range(count)],
    )
    norm.high = [h if h > lo else lo + 1.0 for lo, h in zip(norm.low, norm.high)]
    stats: dict[str, Any] = {
        "images": [s.path for s in scenes],
        "rasters": [_header(s) for s in scenes],
        "dtype": dtype.name,
        "pixels": total,
        "nodata_fraction": nodata / max(total, 1),
        "bands": band_stats,
        "normalization": norm.to_dict(),
    }
    if class_counts.size:
        freq = class_counts / max(class_counts.sum(), 1)
        stats["classes"] = {
            "pixels": class_counts.tolist(),
            "frequency": [round(float(f), 8) for f in freq],
            **class_weights(class_counts),
        }
    return stats, norm


def _header(s: Scene) -> dict[str, Any]:
    """One raster's header: size (pixels), band count, dtype, nodata, CRS (as text) and resolution (CRS units per pixel)."""
    t = s.transform
    georef = s.crs is not None
    return {
        "path": s.path,
        "width": s.width,
        "height": s.height,
        "bands": s.count,
        "dtype": str(np.dtype(s.dtype)),
        "nodata": s.nodata,
        "crs": s.crs.to_string() if georef else None,  # type: ignore[union-attr]
        "resolution": [abs(t.a), abs(t.e)] if georef else None,
        "units": (s.crs.linear_units or "unknown") if georef else "pixels",  # type: ignore[union-attr]
    }


def _bands_figure(
    path: Path, bands: _Bands, names: list[str], norm: NormStats, max_panels: int = 16, max_bars: int = 128
) -> Path:
    """One figure: histograms as small multiples (up to ``max_panels`` bands), else a spectral profile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    C = len(names)
    std = bands.std()
    if C <= max_panels:
        cols = min(C, 4)
        rows = int(np.ceil(C / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), dpi=100, squeeze=False)
        for k, ax in enumerate(axes.ravel()):
            if k >= C:
                ax.axis("off")
                continue
            hist, edges = bands.hist[k], bands.edges(k)
            if len(hist) > max_bars:  # merge neighbouring bins for display
                f = int(np.ceil(len(hist) / max_bars))
                pad = (-len(hist)) % f
                hist = np.pad(hist, (0, pad)).reshape(-1, f).sum(1)
                edges = np.append(edges[::f], edges[-1])[: len(hist) + 1]
            ax.bar(edges[:-1], hist, width=np.diff(edges), align="edge", color="#4477aa")
            ax.set_title(f"{names[k]}: mean {bands.mean[k]:.4g}, std {std[k]:.4g}", fontsize=8)
            ax.tick_params(labelsize=7)
    else:
        fig, ax = plt.subplots(figsize=(9, 3.6), dpi=100)
        x = np.arange(1, C + 1)
        ax.fill_between(x, norm.low, norm.high, color="#4477aa", alpha=0.2, label="2-98% range")
        ax.fill_between(x, bands.mean - std, bands.mean + std, color="#4477aa", alpha=0.35, label="mean +/- std")
        ax.plot(x, bands.mean, color="#224477", lw=1.2, label="mean")
        ax.set_xlabel("band")
        ax.set_ylabel("value")
        ax.set_title(f"spectral profile of {C} bands")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
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
