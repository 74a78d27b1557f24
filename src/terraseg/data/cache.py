"""A byte-limited LRU cache of decoded scene regions, one per process, shared by every scene.

Training reads random windows from many scenes; holding a small scene's pixels (and rasterized
labels) in memory after its first read avoids decoding it again for every window. The cache holds at
most :func:`limit_bytes` bytes in all, whatever the number of scenes: the least recently used
entries go first. The budget is ``data.cache_mb`` (training) or ``$TERRASEG_CACHE_MB`` (default
1024), shared by the loader's worker processes (each holds its share). Masks are stored in the
smallest integer type that holds them and widened to int64 when read. GDAL's own block cache is
set to a quarter of the budget (:func:`configure`).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

DEFAULT_MB = 1024


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
        try:
            from torch.utils.data import get_worker_info

            info = get_worker_info()
        except ImportError:
            info = None
        share = info.num_workers if info is not None else 1
        return int(self.total_mb * 2**20 / max(share, 1))

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
        return {"limit_mb": round(self.limit() / 2**20, 1), "peak_mb": round(self.peak / 2**20, 1), "entries": len(self._items),
                "hits": self.hits, "misses": self.misses, "evictions": self.evictions}


CACHE = ByteLRU()


def configure(total_mb: float) -> None:
    """Set the process's cache budget (MB, shared by loader workers) and GDAL's block cache to a quarter of it;
    the cache is trimmed to the new budget and its counters start afresh.

    Args:
        total_mb: the budget in MiB.
    """
    CACHE.total_mb = float(total_mb)
    CACHE.reset()
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


__all__ = ["CACHE", "ByteLRU", "compact_mask", "configure"]
