"""A byte-limited LRU cache of decoded scene regions, one per process, shared by every scene.

Training reads random windows from many scenes; holding a small scene's pixels (and rasterized
labels) in memory after its first read avoids decoding it again for every window. The cache holds at
most :func:`limit_bytes` bytes in all, whatever the number of scenes: the least recently used
entries go first. The budget is ``data.cache_mb`` (training) or ``$TERRASEG_CACHE_MB`` (default
1024), shared by the loader's worker processes (each holds its share). Masks are stored in the
smallest integer type that holds them and widened to int64 when read. GDAL's own block cache is
set to a quarter of the budget (:func:`configure`).

When a project's decoded scenes exceed that budget (the cache evicts more entries than it holds), a
second tier takes the overflow: :class:`SpillStore` writes each decoded region once, uncompressed and cut
into strips, to a folder on local disk for the run (``data.spill_mb``, removed at the end), and
later windows of that region are read from there with a few ``pread`` calls instead of being decoded
and rasterized again. The operating system's page cache keeps those files in memory when it can; that
memory is not the process's (it never counts in its RSS) and the kernel gives it back under pressure.
nnU-Net unpacks its preprocessed cases to uncompressed arrays for the same reason (Isensee et al.,
Nature Methods 2021, ``unpack_dataset``).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MB = 1024
DEFAULT_SPILL_MB = 16384


class ByteLRU:
    """Least-recently-used mapping bounded by the bytes of its values (numpy arrays or tuples of them)."""

    def __init__(self) -> None:
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.peak = 0
        self.hits = self.misses = self.evictions = 0
        self.total_mb: float = float(os.environ.get("TERRASEG_CACHE_MB", DEFAULT_MB))

    def limit(self) -> int:
        """This process's byte budget: the total divided among the DataLoader's worker processes when in one."""
        return int(self.total_mb * 2**20 / _worker_share())

    def get(self, key: Any) -> Any:
        """The value under ``key`` (now the most recent), or None."""
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return hit[0]

    def put(self, key: Any, value: Any, nbytes: int) -> bool:
        """Keep ``value`` (``nbytes`` bytes) unless it alone exceeds a quarter of the budget; evict the oldest to fit.

        Returns:
            Whether the value was kept.
        """
        limit = self.limit()
        if nbytes > limit // 4:
            return False
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            while self._items and self.bytes + nbytes > limit:
                _, (_, b) = self._items.popitem(last=False)
                self.bytes -= b
                self.evictions += 1
            self._items[key] = (value, nbytes)
            self.bytes += nbytes
            self.peak = max(self.peak, self.bytes)
        return True

    def reset(self) -> None:
        """Evict down to the current budget and start the counters (and the peak) afresh: a new run's figures."""
        limit = self.limit()
        with self._lock:
            while self._items and self.bytes > limit:
                _, (_, b) = self._items.popitem(last=False)
                self.bytes -= b
            self.peak = self.bytes
            self.hits = self.misses = self.evictions = 0

    def thrashing(self) -> bool:
        """True once more entries were evicted than the cache holds: the working set exceeds the budget, so
        caching whole regions on a miss costs more than it saves (readers then read just the window)."""
        return self.evictions > max(len(self._items), 8)

    def clear(self) -> None:
        """Drop every entry (counters stay)."""
        with self._lock:
            self._items.clear()
            self.bytes = 0

    def report(self) -> dict[str, float]:
        """Budget, peak use (MB) and hit/miss/eviction counts of this process, for a run's summary."""
        return {
            "limit_mb": round(self.limit() / 2**20, 1),
            "peak_mb": round(self.peak / 2**20, 1),
            "entries": len(self._items),
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
        }


CACHE = ByteLRU()


def _worker_share() -> int:
    """Processes sharing a budget: the DataLoader's worker count inside a worker, else 1."""
    try:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
    except ImportError:
        info = None
    return max(info.num_workers, 1) if info is not None else 1


def _open_files() -> int:
    """Descriptors a :class:`SpillStore` keeps open: a quarter of the process's limit (``RLIMIT_NOFILE``), 64 to 4096."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 256
    return 4096 if soft == resource.RLIM_INFINITY else int(min(max(soft // 4, 64), 4096))


class _Layout(tuple):
    """A spill file's geometry, parsed once from its header: ``(H, W, strip width, row bytes, sections,
    constants)``; each section is ``(dtype, planes, start byte in a row, bytes, ((name, first plane, end
    plane), ...))``, each constant ``(name, value, dtype)``: a one-plane array of one value, not written."""


class SpillStore:
    """Decoded regions on local disk, cut into strips ``STRIP`` pixels wide and as tall as the region, read back
    window by window.

    A file holds a header line (JSON: height, width, strip width and its sections) padded to
    :data:`HEADER_BYTES`, then the strips one after the other, each row by row: a strip's row holds the
    ``STRIP`` pixels of every plane of every section side by side (an image's bands, the validity, the
    class mask), so the rows of a window that meet one strip are one contiguous ``pread`` of exactly
    those rows. A plane of one value (every pixel valid; no labels) is recorded in the header, not
    written. Files are written whole under a temporary name and renamed, so a reader (another loader
    worker) never sees half a file. The store holds at most ``total_mb`` MiB (each loader worker its
    share); past that, nothing more is written.
    """

    # A 128 px window meets 3 strips of 64 px (1.5x its pixels, in 3 reads); putting it back together copies one
    # run of STRIP bytes per plane, row and strip. benchmarks/data_scale.py at 1,000 scenes: tiles of 32 x 32,
    # 32 x 64 and 64 x 64 px were slower (5 or 3 reads of 1.5-2.3x the window's pixels).
    STRIP = 64
    HEADER_BYTES = 4096

    def __init__(self) -> None:
        self.root: Path | None = None
        self.total_mb = float(DEFAULT_SPILL_MB)
        self.bytes = 0
        self.hits = self.writes = 0
        self.full = False  # the budget is spent: regions not yet written are read window by window
        self._owner = 0
        self._paths: dict[Any, str] = {}  # key -> file, so a read hashes no key
        self._open: dict[Any, tuple[int, _Layout]] = {}  # key -> descriptor and geometry of its file, at most open_files
        self.open_files = _open_files()

    @property
    def enabled(self) -> bool:
        """Whether regions can still be written (a run's folder is open and its budget not spent)."""
        return self.root is not None and not self.full

    def open(self, total_mb: float, parent: str | None = None) -> None:
        """Start a run's store: a new folder under ``parent`` (default: the system's temporary folder).

        Args:
            total_mb: disk budget in MiB; 0 turns the store off.
            parent: where the folder is made.
        """
        self.close()
        self.total_mb = float(total_mb)
        if total_mb > 0:
            self.root = Path(tempfile.mkdtemp(prefix="terraseg-decoded-", dir=parent))
            self._owner = os.getpid()
            atexit.register(self.close)

    def close(self) -> None:
        """Remove the run's folder (only the process that made it; loader workers leave it) and turn the store off."""
        for fd, _ in self._open.values():
            os.close(fd)
        self._open.clear()
        if self.root is not None and os.getpid() == self._owner:
            shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
        self.bytes = self.hits = self.writes = 0
        self.full = False
        self._paths.clear()

    def _path(self, key: Any) -> str:
        path = self._paths.get(key)
        if path is None:
            assert self.root is not None
            path = str(self.root / (hashlib.sha1(repr(key).encode()).hexdigest() + ".strips"))
            if len(self._paths) > 65536:
                self._paths.clear()
            self._paths[key] = path
        return path

    def put(self, key: Any, arrays: dict[str, np.ndarray]) -> bool:
        """Write a decoded region: named ``(P, H, W)`` or ``(H, W)`` arrays of one height and width.

        Returns:
            Whether it was written (False: store off, or its budget spent).
        """
        if not self.enabled:
            return False
        S = self.STRIP
        planes = {k: (a[None] if a.ndim == 2 else a) for k, a in arrays.items() if a is not None}
        H, W = next(iter(planes.values())).shape[-2:]
        n = -(-W // S)
        header: dict[str, Any] = {"height": H, "width": W, "strip": S, "sections": [], "constant": {}}
        for k, a in list(planes.items()):  # a plane of one value (all valid, no labels) is not written: fewer bytes per read
            if len(planes) > 1 and a.shape[0] == 1 and a.dtype.kind in "biu" and a.size and a.min() == a.max():
                header["constant"][k] = [int(a.flat[0]), a.dtype.str]
                del planes[k]
        parts, start = [], 0
        for dt in dict.fromkeys(a.dtype for a in planes.values()):  # arrays of one dtype share a section
            names = [k for k, a in planes.items() if a.dtype == dt]
            stacked = np.concatenate([planes[k] for k in names]) if len(names) > 1 else planes[names[0]]
            P = stacked.shape[0]
            padded = np.zeros((P, H, n * S), dtype=dt)
            padded[:, :, :W] = stacked
            strips = np.ascontiguousarray(padded.reshape(P, H, n, S).transpose(2, 1, 0, 3))  # (strip, row, plane, column)
            parts.append(strips.reshape(n, H, -1).view(np.uint8))
            bounds = np.cumsum([0] + [planes[k].shape[0] for k in names]).tolist()
            header["sections"].append(
                {
                    "dtype": dt.str,
                    "planes": P,
                    "start": start,
                    "bytes": parts[-1].shape[-1],
                    "names": {k: bounds[i : i + 2] for i, k in enumerate(names)},
                }
            )
            start += parts[-1].shape[-1]
        header["row"] = start  # one strip row's bytes of every section, side by side
        records = np.concatenate(parts, axis=2)
        size = self.HEADER_BYTES + records.nbytes
        if self.bytes + size > self.total_mb * 2**20 / _worker_share():
            self.full = True
            return False
        line = json.dumps(header).encode()
        if len(line) >= self.HEADER_BYTES:
            return False
        path = self._path(key)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(line.ljust(self.HEADER_BYTES, b" "))
                f.write(records.data.cast("B"))
            os.replace(tmp, path)
        except OSError:  # a full disk: the run goes on decoding instead
            Path(tmp).unlink(missing_ok=True)
            self.full = True
            return False
        self.bytes += size
        self.writes += 1
        return True

    def has(self, key: Any) -> bool:
        """Whether the region under ``key`` was written (by this process or another).

        Args:
            key: the region's cache key.
        """
        return self.root is not None and (key in self._open or os.path.exists(self._path(key)))

    def _file(self, key: Any) -> tuple[int, _Layout] | None:
        """The open descriptor of the region's file and its geometry (kept for the ``open_files`` most recently read
        regions: ``pread`` needs no file position, so loader workers share nothing), or None when never written."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError:
            return None
        h = json.loads(os.pread(fd, self.HEADER_BYTES, 0))
        secs = tuple(
            (np.dtype(s["dtype"]), s["planes"], s["start"], s["bytes"], tuple((k, p0, p1) for k, (p0, p1) in s["names"].items()))
            for s in h["sections"]
        )
        const = tuple((k, v, np.dtype(dt)) for k, (v, dt) in h["constant"].items())
        if len(self._open) >= self.open_files:
            os.close(self._open.pop(next(iter(self._open)))[0])
        entry = self._open[key] = (fd, _Layout((h["height"], h["width"], h["strip"], h["row"], secs, const)))
        return entry

    def read(self, key: Any, row: int, col: int, height: int, width: int, fills: dict[str, Any]) -> dict[str, np.ndarray] | None:
        """Window ``(row, col, height, width)`` of each section, padded with ``fills[name]`` outside the region.

        Returns:
            ``{name: (P, height, width)}`` (contiguous planes of one array per section), or None when
            the region was never written.
        """
        if self.root is None:
            return None
        entry = self._open.get(key) or self._file(key)
        if entry is None:
            return None
        fd, (H, W, S, R, sections, constants) = entry
        r0, c0, r1, c1 = max(row, 0), max(col, 0), min(row + height, H), min(col + width, W)
        inside = r0 == row and c0 == col and r1 == row + height and c1 == col + width
        out: dict[str, np.ndarray] = {}
        if r1 > r0 and c1 > c0:
            s0, h = c0 // S, r1 - r0
            k = (c1 - 1) // S - s0 + 1
            buf = np.empty((k, h * R), np.uint8)
            at = self.HEADER_BYTES + (s0 * H + r0) * R
            for i in range(k):  # the window's rows of one strip: one read
                os.preadv(fd, [buf[i]], at + i * H * R)
            rows = buf.reshape(k, h, R)
            x0 = c0 - s0 * S
            for dt, P, start, nbytes, names in sections:
                part = rows if len(sections) == 1 else rows[:, :, start : start + nbytes]
                strips = part.view(dt).reshape(k, h, P, S).transpose(2, 1, 0, 3).reshape(P, h, k * S)
                if inside:  # a view of the rows read: the batch copies it once (measured faster than a contiguous copy here)
                    a = strips[:, :, x0 : x0 + width]
                else:
                    a = np.empty((P, height, width), dtype=dt)
                    for name, p0, p1 in names:
                        a[p0:p1] = fills.get(name, 0)
                    a[:, r0 - row : r1 - row, c0 - col : c1 - col] = strips[:, :, x0 : x0 + c1 - c0]
                for name, p0, p1 in names:
                    out[name] = a[p0:p1]
        else:
            for dt, _P, _, _, names in sections:
                for name, p0, p1 in names:
                    out[name] = np.full((p1 - p0, height, width), fills.get(name, 0), dtype=dt)
        for name, value, dt in constants:
            a = np.full((1, height, width), value, dtype=dt)
            if not inside:
                a[:] = fills.get(name, 0)
                if r1 > r0 and c1 > c0:
                    a[:, r0 - row : r1 - row, c0 - col : c1 - col] = value
            out[name] = a
        self.hits += 1
        return out

    def report(self) -> dict[str, float]:
        """Budget, bytes written (MB), regions written and windows read by this process."""
        return {
            "spill_limit_mb": round(self.total_mb, 1),
            "spill_mb": round(self.bytes / 2**20, 1),
            "spill_regions": self.writes,
            "spill_reads": self.hits,
        }


SPILL = SpillStore()


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB.

    On Linux, ``VmHWM`` of ``/proc/self/status`` (the high-water mark of this program's memory since it
    started: ``getrusage``'s ``ru_maxrss`` carries a forking parent's peak across ``exec``, so a small run
    started by a large process would report the parent's); elsewhere ``getrusage`` (KiB on Linux, bytes
    on macOS); 0 when neither answers.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 2**10, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return 0.0
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def configure(total_mb: float, spill_mb: float | None = None) -> None:
    """Set the process's cache budget (MB, shared by loader workers) and GDAL's block cache to a quarter of it;
    the cache is trimmed to the new budget and its counters start afresh.

    Args:
        total_mb: the budget in MiB.
        spill_mb: when given, a new run's :class:`SpillStore` with this disk budget in MiB (0: none).
    """
    CACHE.total_mb = float(total_mb)
    CACHE.reset()
    if spill_mb is not None:
        SPILL.open(spill_mb)
    try:
        from rasterio.env import set_gdal_config

        set_gdal_config("GDAL_CACHEMAX", str(max(int(total_mb // 4), 16)))  # MB when below 100000 (GDAL config docs)
    except Exception:  # noqa: BLE001 - outside a rasterio environment: GDAL's default stays
        pass


def compact_mask(mask: np.ndarray | None) -> np.ndarray | None:
    """A class mask in the smallest integer type that holds it (uint8 for ids and ignore_index 255).

    Args:
        mask: ``(H, W)`` int64 class ids, or None.
    """
    if mask is None or mask.size == 0:
        return mask
    lo, hi = int(mask.min()), int(mask.max())
    if lo >= 0 and hi < 256:
        return mask.astype(np.uint8)
    if lo >= -32768 and hi < 32768:
        return mask.astype(np.int16)
    return mask


__all__ = ["CACHE", "SPILL", "ByteLRU", "SpillStore", "compact_mask", "configure", "peak_rss_mb"]
