"""PyTorch datasets of windows over scenes, producing the sample dict contract.

Sample dict (TorchGeo-style):
    ``image``: float32 tensor ``(C, H, W)``, normalised by :func:`terraseg.data.normalize.normalize`;
    ``mask``: int64 tensor ``(H, W)`` with ``ignore_index`` for unknown, nodata and padding;
    ``valid``: bool tensor ``(H, W)``; ``crs``: WKT string or None; ``transform``: 6 affine
    coefficients (a, b, c, d, e, f); ``bounds``: (left, bottom, right, top) in CRS units;
    ``scene``: scene name; ``window``: (row, col, height, width) in the scene's pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from terraseg.data.normalize import NormStats, normalize
from terraseg.data.scenes import Scene
from terraseg.data.windows import random_offset
from terraseg.errors import InputFileError


def _raw_mask(mask: np.ndarray, ignore_index: int) -> np.ndarray:
    """A raw sample's ``(H, W)`` class mask: uint8 when every id and ``ignore_index`` fit in it (an eighth of an
    int64 mask's bytes to ship), else int64."""
    if mask.dtype == np.uint8:
        return mask
    if 0 <= ignore_index < 256 and (mask.size == 0 or int(mask.max()) < 256):
        return mask.astype(np.uint8)
    return mask.astype(np.int64, copy=False)


def make_sample(scene: Scene, row: int, col: int, size: int, stats: NormStats | None) -> dict[str, Any]:
    """Read and normalise one window of a scene into a sample dict (no augmentation).

    Args:
        scene: the scene.
        row: top-left pixel of the window (may be negative or past the edge: padded).
        col: top-left pixel of the window (may be negative or past the edge: padded).
        size: window side in pixels.
        stats: the normalisation statistics, or None to keep the raw pixels (the training loader:
            :func:`normalize_batch` then normalises whole batches on the training device, and the loader ships uint8 /
            int16 pixels and uint8 masks, a quarter to an eighth of the bytes).

    Returns:
        Sample dict (module docstring): ``image`` float32 ``(C, size, size)`` (raw: uint8 / int16 as
        read, other dtypes as float32), ``mask`` int64 ``(size, size)`` (raw: uint8 when every class id
        and the ignore index fit), ``valid``, ``crs``, ``transform``, ``bounds``, ``scene``, ``window``.

    Raises:
        InputFileError: unreadable pixels.
        BundleError: a band count the statistics do not describe.
    """
    r = scene.read(row, col, size, size, compact=stats is None)  # raw: the mask as stored (uint8 for most tasks)
    mask = r.mask if r.mask is not None else np.full((size, size), scene.ignore_index, dtype=np.int64)
    if stats is None:
        image = r.image if r.image.dtype in (np.uint8, np.int16) else r.image.astype(np.float32)
        mask = _raw_mask(mask, scene.ignore_index)
    else:
        image = normalize(r.image, stats, r.valid)
    transform, bounds = scene.window_georef(row, col, size, size)
    return {
        "image": torch.from_numpy(image),
        "mask": torch.from_numpy(mask),
        "valid": torch.from_numpy(r.valid),
        "crs": scene.crs_wkt(),
        "transform": transform,
        "bounds": bounds,
        "scene": scene.name,
        "window": (row, col, size, size),
    }


def normalize_batch(batch: dict[str, Any], stats: NormStats) -> dict[str, Any]:
    """Normalise a collated batch of raw samples (``make_sample(..., stats=None)``) where it lies.

    Runs :func:`terraseg.data.normalize.normalize` on the ``(N, C, H, W)`` image on its device (the
    GPU after transfer) and widens a uint8 mask to int64: the same values the loader workers would
    have produced, with the arithmetic moved off the host.

    Args:
        batch: collated batch; ``image`` raw, ``valid`` ``(N, H, W)`` bool, ``mask`` ``(N, H, W)``.
        stats: the normalisation statistics.

    Returns:
        The batch with ``image`` float32 normalised and ``mask`` int64.
    """
    batch["image"] = normalize(batch["image"], stats, batch["valid"])
    if batch["mask"].dtype != torch.int64:
        batch["mask"] = batch["mask"].long()
    return batch


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``image``/``mask``/``valid`` into ``(N, ...)`` tensors; keep metadata as lists.

    Args:
        samples: sample dicts of one batch.

    Returns:
        One dict: tensors stacked to ``(N, ...)``, other values as lists of N.
    """
    out: dict[str, Any] = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised ``torch.distributed`` process group, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSampler(torch.utils.data.Sampler):
    """Indexes ``epoch * length + i`` for ``i`` in ``0..length-1`` (shuffled per epoch when asked), sharded over ranks.

    The epoch travels inside each index, so datasets whose samples depend on the epoch
    (:class:`RandomWindowDataset`, the classification crops) draw new samples every epoch also when
    the DataLoader's workers are persistent: workers keep the dataset copy they started with, and
    :meth:`set_epoch` on that copy in the main process would never reach them. Lightning calls
    :meth:`set_epoch` at the start of every epoch.

    Under distributed training (an initialised ``torch.distributed`` group, looked up when iterating,
    since DDP starts after the loaders are built) rank ``r`` of ``n`` takes every n-th index of the
    epoch's order from ``r``, cut to ``length // n`` so every rank runs the same number of steps: the
    ranks together see the windows one process would (Lightning's ``use_distributed_sampler`` is
    off, as its wrapper would hide :meth:`set_epoch`).

    Args:
        length: samples per epoch (all ranks together).
        shuffle: a fresh permutation per epoch, seeded by ``(seed, epoch)``, the same on every rank.
        seed: base seed.
    """

    def __init__(self, length: int, shuffle: bool = False, seed: int = 0) -> None:
        self.length, self.shuffle, self.seed, self.epoch = length, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose indexes the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length // rank_and_world()[1]

    def __iter__(self):
        rank, world = rank_and_world()
        order = (
            np.random.default_rng((self.seed, self.epoch)).permutation(self.length) if self.shuffle else np.arange(self.length)
        )
        base = self.epoch * self.length
        return iter([base + int(i) for i in order[rank::world][: self.length // world]])


class ShardSampler(torch.utils.data.Sampler):
    """Indexes ``rank, rank + n, rank + 2n, ...`` of ``0..length-1`` on rank ``rank`` of ``n`` (all of them without DDP).

    For validation scenes: each rank predicts its share, no scene twice (unlike
    ``DistributedSampler``, which pads with repeats), and the confusion matrices are summed over ranks.

    Args:
        length: items (scenes).
        pad: a rank left without an item gets the index ``-1`` (a step that does nothing:
            :class:`SceneIndexDataset` users skip it), since Lightning refuses an empty loader on any rank
            (one validation scene, two ranks).
    """

    def __init__(self, length: int, pad: bool = False) -> None:
        self.length, self.pad = length, pad

    def _indexes(self) -> list[int]:
        rank, world = rank_and_world()
        own = list(range(rank, self.length, world))
        return own or ([-1] if self.pad else [])

    def __len__(self) -> int:
        return len(self._indexes())

    def __iter__(self):
        return iter(self._indexes())


class RandomWindowDataset(Dataset):
    """Random training windows; a share of them centred on pixels of non-background classes.

    Windows may extend past scene edges (padded, masked with ``ignore_index``), so every pixel can
    be sampled. Each index draws from a generator seeded by ``(seed, epoch, index)``: reproducible,
    and different every epoch (:class:`EpochSampler` indexes, or :meth:`set_epoch` without workers).

    Args:
        scenes: labelled scenes (drawn in proportion to their labelled pixels).
        window: window size (pixels).
        length: windows per epoch.
        stats: normalisation statistics, or None for raw samples (:func:`normalize_batch` on the device).
        rare_class_share: share of windows centred on a random
        pixel of a random non-background class.
        seed: base seed. Augmentation is not the loader's: it
        runs on whole batches on the training device (:mod:`terraseg.training.augment`).
    """

    def __init__(
        self,
        scenes: list[Scene],
        window: int,
        length: int,
        stats: NormStats | None,
        rare_class_share: float = 0.5,
        seed: int = 0,
    ) -> None:
        if not scenes:
            raise InputFileError("the training sources hold no scene.")
        self.scenes, self.window, self.length, self.stats = scenes, window, length, stats
        self.rare_class_share, self.seed = rare_class_share, seed
        self.epoch = 0
        rng = np.random.default_rng(seed)
        # one streamed pass over the scenes' overviews: labelled pixels, and class -> [(scene index, locations, pixels)]
        self.class_locs: dict[int, list[tuple[int, np.ndarray, int]]] = {}
        labelled = np.zeros(len(scenes))
        for i, s in enumerate(scenes):
            locs, counts, labelled[i] = s.class_census(2000 if rare_class_share > 0 else 0, rng)
            for c, where in locs.items():
                if len(where):
                    self.class_locs.setdefault(c, []).append((i, where, counts[c]))
        # windows in proportion to labelled area (a project's scenes differ in size and in how much is labelled)
        weights = labelled if labelled.sum() > 0 else np.array([s.height * s.width for s in scenes], dtype=np.float64)
        self.scene_p = weights / weights.sum()
        # cumulative distributions, built once: a draw is a binary search, not a pass over every scene
        # (the same draws as Generator.choice(p=...), which computes this cdf on every call)
        self._scene_cdf = _cdf(self.scene_p)
        self._class_keys = list(self.class_locs)
        self._class_cdf = {c: _cdf(_share([n for _, _, n in e])) for c, e in self.class_locs.items()}
        self._reads_planned: int | None = None

    def _plan_reads(self) -> None:
        """Once per process: when the scenes' decoded regions exceed this process's cache budget, random
        windows would evict a whole cached scene for almost every window (decoding a scene to use one
        window of it). Each scene is then read from the run's spill store on disk, where
        :meth:`stage` decoded it once (:class:`terraseg.io.cache.SpillStore`); without a store, windows are
        read on their own from GDAL (its block cache keeps recent tiles)."""
        import os

        from terraseg.io.cache import CACHE, SPILL

        if self._reads_planned == os.getpid():
            return
        self._reads_planned = os.getpid()
        cacheable = [s for s in self.scenes if getattr(s, "_cache_ok", False)]
        total = sum(s.height * s.width * (s.count * np.dtype(s.dtype).itemsize + 2) for s in cacheable)
        if total > CACHE.limit():
            for s in cacheable:
                if SPILL.root is not None:
                    s._past_budget = True  # type: ignore[attr-defined]
                else:
                    s._cache_ok = False  # type: ignore[attr-defined]

    def stage(self) -> int:
        """Decode every scene a window can come from into the run's spill store, before the first epoch,
        when the scenes exceed the memory budget (in the main process: loader workers then find them).

        Staged lazily instead, the scenes drawn rarely (little labelled area) would be decoded one by one
        in later epochs, each costing a whole scene's decode for one window. Stops when the store's disk
        budget (``data.spill_mb``) is spent; the rest are read window by window.

        Returns:
            The scenes staged now (0 when everything fits in memory or there is no store).
        """
        from terraseg import progress
        from terraseg.io.cache import SPILL

        self._plan_reads()
        drawn = set(np.nonzero(self.scene_p > 0)[0].tolist()) | {i for e in self.class_locs.values() for i, _, _ in e}
        todo = [self.scenes[i] for i in sorted(drawn) if getattr(self.scenes[i], "_past_budget", False)]
        if not todo or not SPILL.enabled:
            return 0
        n = 0
        with progress.task("decoding scenes once into the spill store", len(todo), "scenes") as advance:
            for s in todo:
                if not SPILL.enabled:  # its disk budget is spent
                    break
                n += int(s.stage())  # type: ignore[attr-defined]
                advance(1)
        return n

    def set_epoch(self, epoch: int) -> None:
        """Change the random windows drawn (called at the start of every epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def draw(self, rng: np.random.Generator) -> tuple[Scene, int, int]:
        """One training window's place: centred on a pixel of a random class (``rare_class_share`` of the
        time) or in a scene drawn by labelled area, at a uniform offset.

        Returns:
            ``(scene, row, col)`` of a ``window`` x ``window`` window, in pixels of the scene.
        """
        centre = None
        if self.class_locs and rng.random() < self.rare_class_share:
            cls = self._class_keys[int(rng.integers(len(self._class_keys)))]
            # scenes in proportion to their pixels of the class
            si, locs, _ = self.class_locs[cls][int(self._class_cdf[cls].searchsorted(rng.random(), side="right"))]
            centre = locs[int(rng.integers(len(locs)))]
        else:
            si = int(self._scene_cdf.searchsorted(rng.random(), side="right"))
        scene = self.scenes[si]
        row = random_offset(rng, scene.height, self.window, None if centre is None else int(centre[0]))
        col = random_offset(rng, scene.width, self.window, None if centre is None else int(centre[1]))
        return scene, row, col

    def __getitem__(self, index: int) -> dict[str, Any]:
        epoch, index = divmod(index, self.length)  # indexes past `length` carry the epoch (EpochSampler)
        rng = np.random.default_rng((self.seed, self.epoch + epoch, index))
        self._plan_reads()
        scene, row, col = self.draw(rng)
        return make_sample(scene, row, col, self.window, self.stats)


def _share(sizes: list) -> np.ndarray:
    sizes_ = np.array(sizes, dtype=np.float64)
    return sizes_ / sizes_.sum()


def _cdf(p: np.ndarray) -> np.ndarray:
    """The cumulative distribution ``Generator.choice(p=p)`` draws from (normalised to end at 1)."""
    cdf = np.asarray(p, dtype=np.float64).cumsum()
    return cdf / cdf[-1]


class SceneIndexDataset(Dataset):
    """Indexes of whole scenes, for validation that predicts each scene with the real predictor.

    Args:
        scenes: the validation scenes (kept in :attr:`scenes`; items are their indexes).
    """

    def __init__(self, scenes: list[Scene]) -> None:
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> int:
        return index


def scene_statistics(scenes: list[Scene], method: str, percentiles: tuple[float, float], max_pixels: int, seed: int) -> NormStats:
    """Per-band statistics of the training scenes (valid pixels only, seeded sample).

    Args:
        scenes: training scenes.
        method: 'meanstd', 'percentile' or 'none'.
        percentiles: low/high percentiles.
        max_pixels: pixels sampled in all (split evenly over scenes).
        seed: sampling seed.

    Returns:
        :class:`NormStats` in the rasters' value units.

    Raises:
        InputFileError: scenes with different band counts, or no valid pixel.
    """
    from terraseg.data.normalize import compute_stats

    counts = {s.count for s in scenes}
    if len(counts) > 1:
        detail = ", ".join(f"{s.name}: {s.count}" for s in scenes[:6])
        raise InputFileError(f"training scenes have different band counts ({detail}).")
    rng = np.random.default_rng(seed)
    per_scene = max(max_pixels // len(scenes), 1000)
    px = np.concatenate([s.sample_pixels(per_scene, rng) for s in scenes], axis=1)
    return compute_stats(px, method, percentiles)
