"""The Lightning module for segmentation training."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch

from terraseg.config import ExperimentConfig
from terraseg.evaluate.metrics import confusion_matrix, metrics_from_confusion, score
from terraseg.models.factory import build_model, logits_to_probs
from terraseg.models.losses import CombinedLoss
from terraseg.models.optim import build_optimizer, build_scheduler


class TaskBase(L.LightningModule):
    """What every terraseg Lightning task shares: forward, NHWC layout, per-epoch sampling, the
    optimiser with a time-aware schedule, and the history/best kept in checkpoints. Subclasses set
    ``self.cfg``, ``self.model``, ``self.total_steps``, ``self.history`` and ``self.best``."""

    cfg: ExperimentConfig
    model: torch.nn.Module
    total_steps: int
    history: list[dict[str, Any]]
    best: dict[str, Any]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _time_progress(self) -> float:
        """Share of the time limit used (0 without one), read from Lightning's Timer."""
        limit = self.cfg.train.max_minutes
        trainer = self._trainer
        if not limit or trainer is None:
            return 0.0
        from lightning.pytorch.callbacks import Timer

        for cb in trainer.callbacks:
            if isinstance(cb, Timer):
                return cb.time_elapsed("train") / (limit * 60.0)
        return 0.0

    def setup(self, stage: str) -> None:
        if self.cfg.train.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        if self.cfg.train.channels_last:
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        return batch

    def on_train_epoch_start(self) -> None:
        ds = self.trainer.train_dataloader.dataset if self.trainer.train_dataloader is not None else None
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(self.current_epoch)

    def configure_optimizers(self):
        opt = build_optimizer(self.model.parameters(), self.cfg.optimizer)
        sched = build_scheduler(opt, self.cfg.optimizer, self.total_steps, self._time_progress)
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["terraseg"] = {"history": self.history, "best": self.best}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("terraseg", {})
        self.history = list(state.get("history", []))
        self.best = dict(state.get("best", {}))


class SegmentationTask(TaskBase):
    """Network + loss + optimiser; validation accumulates one confusion matrix per epoch.

    Logged per epoch: ``train/loss``, ``val/loss``, ``val/miou``, ``val/iou`` (binary: positive
    class), ``val/score`` (the selection metric: ``val/iou`` for binary tasks, else ``val/miou``),
    and per-class ``val/iou_<class>``.

    Args:
        config: the experiment config as a plain dict (saved in checkpoints as hyperparameters).
        in_channels: input bands. total_steps: optimiser steps of the whole run (for schedules).
    """

    def __init__(self, config: dict[str, Any], in_channels: int, total_steps: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg = ExperimentConfig.model_validate(config)
        c = self.cfg
        self.model = build_model(c.model, in_channels, c.num_classes)
        self.loss_fn = CombinedLoss(c.loss, c.num_classes, c.ignore_index)
        self.total_steps = total_steps
        self._cm = np.zeros((c.num_classes, c.num_classes), dtype=np.int64)
        self._val_losses: list[float] = []
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["image"])
        loss = self.loss_fn(logits, batch["mask"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.model(batch["image"])
        self._val_losses.append(float(self.loss_fn(logits, batch["mask"])))
        pred = logits_to_probs(logits).argmax(dim=1)
        self._cm += confusion_matrix(pred.cpu(), batch["mask"].cpu(), self.cfg.num_classes, self.cfg.ignore_index)

    def on_validation_epoch_end(self) -> None:
        names = [c.name for c in self.cfg.classes]
        m = metrics_from_confusion(self._cm, names)
        s = score(m)
        logs = {"val/miou": m["miou"] or 0.0,
                "val/loss": float(np.mean(self._val_losses)) if self._val_losses else 0.0}
        if "iou" in m:
            logs["val/iou"] = m["iou"] or 0.0
            logs["val/dice"] = m["dice"] or 0.0
        for n, v in m["per_class"].items():
            logs[f"val/iou_{n}"] = v["iou"] if v["iou"] is not None else 0.0
        self.log_dict(logs, prog_bar=False)
        self.log("val/score", s, prog_bar=True)
        if not self.trainer.sanity_checking:
            entry = {"epoch": self.current_epoch, "val/score": s, **logs}
            self.history.append(entry)
            if not self.best or s > self.best["val/score"]:
                self.best = entry | {"per_class": m["per_class"]}
        self._cm[:] = 0
        self._val_losses.clear()
