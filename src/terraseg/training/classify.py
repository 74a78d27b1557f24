"""Scene-classification training: the Lightning module and the data loaders from class folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from terraseg.config import ExperimentConfig
from terraseg.data.classes import ClassificationDataset, image_statistics, train_val_items
from terraseg.data.datasets import EpochSampler, ShardSampler, collate_samples
from terraseg.data.normalize import NormStats, with_fixed_normalisation
from terraseg.devices import loader_options
from terraseg.errors import InputFileError
from terraseg.io.atomic import write_text_atomic
from terraseg.models.factory import build_model
from terraseg.training.module import ModuleBase

CACHE_BYTES = 1 << 30  # decoded training + validation images held in memory at most (estimated from the first)


def classification_loaders(cfg: ExperimentConfig, stats_path: Path, resume: bool):
    """``(train_loader, val_loader or None, in_channels, stats, input spec fields)`` for a classification config.

    Args:
        cfg: a classification config.
        stats_path: where the training statistics are written (read back on resume).
        resume: reuse the statistics of an interrupted run.

    Raises:
        InputFileError: empty or unknown class folders, unreadable images, mixed band counts.
    """
    train_items, val_items = train_val_items(cfg)
    from terraseg.data.classes import load_checked

    first = load_checked(train_items[0].path, None)
    bands = first.shape[0]
    d = cfg.data
    if resume and stats_path.is_file():
        stats = NormStats.from_dict(json.loads(stats_path.read_text()))
    else:
        stats = image_statistics(
            train_items, d.normalization.method, d.normalization.percentiles, d.normalization.max_pixels, cfg.train.seed, bands
        )
        stats = with_fixed_normalisation(stats, d.normalization.mean, d.normalization.std, bands)
        write_text_atomic(stats_path, json.dumps(stats.to_dict(), indent=2))
    cache = first.nbytes * (len(train_items) + len(val_items)) < CACHE_BYTES  # decoded images kept only when they fit
    train_ds = ClassificationDataset(
        train_items,
        d.window,
        stats,
        bands,
        d.augment,
        d.flips,
        (d.crop_scale[0], d.crop_scale[1]),
        cfg.train.seed,
        cache,
    )
    kw: dict[str, Any] = loader_options(d.num_workers, cfg.training_device()) | {"collate_fn": collate_samples}
    # the epoch travels in the sampler's indexes: new crops every epoch also with persistent workers
    train_dl = DataLoader(
        train_ds,
        batch_size=d.batch_size,
        sampler=EpochSampler(len(train_ds), shuffle=True, seed=cfg.train.seed),
        drop_last=len(train_ds) > d.batch_size,
        **kw,
    )
    val_dl = None
    if val_items:
        val_ds = ClassificationDataset(val_items, d.window, stats, bands, cache=cache)
        val_dl = DataLoader(val_ds, batch_size=d.batch_size, sampler=ShardSampler(len(val_ds)), **kw)  # one share per DDP rank
    if len(train_items) < 2:
        raise InputFileError("classification training needs at least two images.")
    return train_dl, val_dl, bands, stats, dict(dtype=str(first.dtype), nodata=None, band_names=d.band_names)


class ClassificationModule(ModuleBase):
    """timm network + label-smoothed cross-entropy; per epoch ``val/acc``, ``val/f1_macro``, ``val/score`` (= acc).

    Args:
        config: the experiment config as a plain dict.
        in_channels: bands.
        total_steps: optimiser steps.
    """

    def __init__(self, config: dict[str, Any], in_channels: int, total_steps: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg = ExperimentConfig.model_validate(config)
        k = self.cfg.num_classes
        self.model = build_model(self.cfg.model, in_channels, k)
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=self.cfg.train.label_smoothing)
        self.total_steps = total_steps
        self.val_acc = MulticlassAccuracy(k, average="micro")
        self.val_f1 = MulticlassF1Score(k, average="macro")
        self._val_losses: list[float] = []
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Cross-entropy of one batch (``image`` ``(N, C, H, W)``, ``label`` ``(N,)``), logged as ``train/loss``."""
        loss = self.loss_fn(self.model(batch["image"]), batch["label"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Accumulate accuracy, macro F1 and loss of one validation batch."""
        logits = self.model(batch["image"])
        self._val_losses.append(float(self.loss_fn(logits, batch["label"])))
        self.val_acc.update(logits, batch["label"])
        self.val_f1.update(logits, batch["label"])

    def on_validation_epoch_end(self) -> None:
        """The epoch's validation figures: ``val/score`` (accuracy), ``val/f1_macro``, ``val/loss``."""
        acc, f1 = float(self.val_acc.compute()), float(self.val_f1.compute())
        self.val_acc.reset()
        self.val_f1.reset()
        logs = {
            "val/score": acc,
            "val/acc": acc,
            "val/f1_macro": f1,
            "val/loss": float(np.mean(self._val_losses)) if self._val_losses else 0.0,
        }
        self._val_losses.clear()
        self.record_validation(logs)
