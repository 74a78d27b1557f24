"""The data a segmentation network trains on: the loaders of the training and validation scenes, and the raw windows
a bundle keeps for INT8 calibration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from terraseg.config import ExperimentConfig
from terraseg.data.datasets import (
    EpochSampler,
    RandomWindowDataset,
    SceneIndexDataset,
    ShardSampler,
    collate_samples,
    scene_statistics,
)
from terraseg.data.normalize import NormStats, with_fixed_normalisation
from terraseg.data.sources import split_scenes
from terraseg.devices import loader_options
from terraseg.errors import InputFileError
from terraseg.io.atomic import write_text_atomic


def segmentation_loaders(cfg: ExperimentConfig, stats_path: Path, resume: bool, scenes: tuple[list, list] | None = None):
    """``(train_loader, val_loader or None, in_channels, stats, input spec fields)`` of a segmentation config.

    Args:
        cfg: a segmentation config.
        stats_path: where the training statistics are written (read back on resume).
        resume: reuse the statistics of an interrupted run.
        scenes: ``(training, validation)`` scenes already split (default: :func:`terraseg.data.sources.split_scenes` of
            ``cfg.data``).

    Raises:
        InputFileError: no labels, mixed band counts, statistics of another band count.
    """
    if scenes is None:
        split = split_scenes(cfg.data, cfg.ignore_index, cfg.num_classes, cfg.train.seed, [c.name for c in cfg.classes])
        scenes = (split.train, split.val)
    train_scenes, val_scenes = scenes
    if not any(s.has_labels for s in train_scenes):
        raise InputFileError("training sources hold no labels.")

    if resume and stats_path.is_file():
        stats = NormStats.from_dict(json.loads(stats_path.read_text()))
    else:
        n = cfg.data.normalization
        if n.stats_file:
            from terraseg.prepare.stats import load_norm_stats

            stats = load_norm_stats(n.stats_file)
            stats.method = n.method
            if stats.bands and stats.bands != train_scenes[0].count:
                raise InputFileError(
                    f"{n.stats_file}: statistics of {stats.bands} bands for images with {train_scenes[0].count} bands."
                )
        else:
            stats = scene_statistics(train_scenes, n.method, n.percentiles, n.max_pixels, cfg.train.seed)
        stats = with_fixed_normalisation(stats, n.mean, n.std, train_scenes[0].count)  # a pretrained encoder's own
        write_text_atomic(stats_path, json.dumps(stats.to_dict(), indent=2))
    in_channels = train_scenes[0].count
    for s in val_scenes:
        if s.count != in_channels:
            raise InputFileError(
                f"{getattr(s, 'path', s.name)}: validation image has {s.count} bands, training images have {in_channels}."
            )

    d = cfg.data
    # augmentation runs on whole batches on the training device (SegmentationModule), so the loader only reads
    # raw windows (uint8 / int16 as read): SegmentationModule normalises whole batches on the training device
    train_ds = RandomWindowDataset(train_scenes, d.window, d.samples_per_epoch, None, d.rare_class_share, cfg.train.seed)
    train_ds.stage()  # scenes past the memory budget: decoded once into the run's spill store, before workers start
    loader_kw: dict[str, Any] = loader_options(d.num_workers, cfg.training_device()) | {"collate_fn": collate_samples}
    train_dl = DataLoader(
        train_ds,
        batch_size=d.batch_size,
        sampler=EpochSampler(len(train_ds)),
        drop_last=len(train_ds) > d.batch_size,
        **loader_kw,
    )
    # validation: whole scenes through the real predictor (SegmentationModule.validation_step), one scene per step
    val_dl = (
        DataLoader(SceneIndexDataset(val_scenes), batch_size=None, sampler=ShardSampler(len(val_scenes), pad=True))
        if val_scenes
        else None
    )

    first = train_scenes[0]
    source_bands = getattr(getattr(first, "info", None), "count", None)
    input_kw = dict(
        band_indexes=getattr(first, "bands", None),
        source_bands=source_bands,
        dtype=first.dtype,
        nodata=first.nodata,
        band_names=cfg.data.band_names or first.band_descriptions(),
    )
    return train_dl, val_dl, in_channels, stats, input_kw


def calibration_windows(scenes: list, window: int, seed: int, n: int = 16) -> bytes:
    """Raw training windows (seeded random places) kept in the bundle for INT8 calibration.

    Args:
        scenes: the training scenes.
        window: window side in pixels.
        seed: the places' seed.
        n: windows kept.
    """
    import numpy as np

    from terraseg.data.windows import random_offset
    from terraseg.prediction.quantize import calibration_bytes

    rng = np.random.default_rng(seed)
    windows = []
    for i in range(n):
        s = scenes[i % len(scenes)]
        r, c = random_offset(rng, s.height, window), random_offset(rng, s.width, window)
        windows.append(s.read(r, c, window, window, labels=False).image)
    return calibration_bytes(windows)
