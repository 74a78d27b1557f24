"""The Lightning modules' shared base and the segmentation task."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch

from terraseg.bundle import MIN_PREDICT_WINDOW
from terraseg.config import ExperimentConfig
from terraseg.config.inference import InferenceConfig
from terraseg.data.datasets import normalize_batch
from terraseg.data.normalize import NormStats
from terraseg.evaluation.metrics import interval_logs, validation_metrics
from terraseg.evaluation.report import evaluate_scenes
from terraseg.infer.sliding import SlidingWindowPredictor
from terraseg.models.factory import build_model, encoder_stages
from terraseg.models.losses import CombinedLoss
from terraseg.models.optim import build_optimizer, build_scheduler
from terraseg.training.tiling import validation_predictor


class ModuleBase(L.LightningModule):
    """What every terraseg Lightning task shares: forward, NHWC layout, per-epoch sampling, the
    optimiser with a time-aware schedule, and the history/best kept in checkpoints. Subclasses set
    ``self.cfg``, ``self.model``, ``self.total_steps``, ``self.history`` and ``self.best``."""

    cfg: ExperimentConfig
    model: torch.nn.Module
    total_steps: int
    history: list[dict[str, Any]]
    best: dict[str, Any]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 1 or K, H, W)`` of a normalised batch ``(N, C, H, W)``."""
        return self.model(x)

    def _time_progress(self) -> float:
        """Share of the training time the wall budget allows that is used (0 without one): the budget callback's."""
        trainer = self._trainer
        if not self.cfg.train.max_minutes or trainer is None:
            return 0.0
        for cb in trainer.callbacks:  # type: ignore[attr-defined]
            if hasattr(cb, "time_progress"):  # terraseg.training.network._Budget
                return float(cb.time_progress())
        return 0.0

    def setup(self, stage: str) -> None:
        """Lightning hook before fitting: the network in channels-last memory format when ``train.channels_last``."""
        if self.cfg.train.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Lightning hook on the device: normalise raw training windows and augment them there when asked."""
        if not isinstance(batch, dict):  # validation batches may be scene indexes
            return batch
        stats = getattr(self, "train_stats", None)
        if stats is not None:  # the training loader yields raw windows: normalise them here, on the device
            batch = normalize_batch(batch, stats)
        if self.trainer.training and getattr(self, "augment_on_device", False):
            from terraseg.training.augment import augment_batch

            if self._aug_gen is None:
                self._aug_gen = torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + self.current_epoch)
            batch = augment_batch(batch, self.cfg.data.augmentation, self.cfg.data.flips, self.cfg.ignore_index, self._aug_gen)
        if self.cfg.train.channels_last:
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        return batch

    _aug_gen: torch.Generator | None = None
    _frozen: list[torch.nn.Module] = []

    def apply_freeze(self, epoch: int) -> int:
        """Freeze the encoder stages the fine-tuning schedule wants frozen in ``epoch`` (0-based).

        The first ``train.freeze_encoder_epochs`` epochs freeze every stage; then 'all' unfreezes
        them at once and 'progressive' one stage per epoch, deepest first. Frozen stages keep their
        weights (no gradient) and their batch-norm statistics (eval mode).

        Args:
            epoch: the epoch about to run.

        Returns:
            The number of frozen stages.
        """
        t = self.cfg.train
        stages = encoder_stages(self.model)
        if not stages or t.freeze_encoder_epochs == 0:
            self._frozen = []
            return 0
        if epoch < t.freeze_encoder_epochs:
            n = len(stages)
        elif t.unfreeze == "progressive":
            n = max(len(stages) - (epoch - t.freeze_encoder_epochs + 1), 0)
        else:
            n = 0
        self._frozen = stages[:n]
        for i, stage in enumerate(stages):
            for p in stage.parameters():
                p.requires_grad_(i >= n)
        return n

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Lightning hook: frozen encoder stages back in eval mode (Lightning sets train mode after validation)."""
        for stage in self._frozen:  # Lightning puts the module back in train mode after validation
            stage.eval()

    def on_train_epoch_end(self) -> None:
        """Add the epoch's mean training loss and learning rate to its history entry (for the learning curve)."""
        if self.history and self.history[-1].get("epoch") == self.current_epoch:
            loss = self.trainer.callback_metrics.get("train/loss")
            if loss is not None:
                self.history[-1]["train/loss"] = round(float(loss), 6)
            opts = self.trainer.optimizers
            if opts:
                self.history[-1]["lr"] = float(opts[0].param_groups[-1]["lr"])

    def on_train_epoch_start(self) -> None:
        """Lightning hook: reseed augmentation, apply the epoch's freezing, and give the epoch to the sampler."""
        self._aug_gen = None  # reseeded per (seed, epoch) on the first batch
        self.apply_freeze(self.current_epoch)
        dl = self.trainer.train_dataloader
        sampler = getattr(dl, "sampler", None)
        if hasattr(sampler, "set_epoch"):  # EpochSampler: the epoch reaches persistent workers inside the indexes
            sampler.set_epoch(self.current_epoch)  # type: ignore[union-attr]
        elif hasattr(getattr(dl, "dataset", None), "set_epoch"):
            dl.dataset.set_epoch(self.current_epoch)  # type: ignore[union-attr]

    def configure_optimizers(self):
        """Lightning hook: the optimiser (encoder and decoder groups when ``train.encoder_lr_ratio`` != 1) and the per-step schedule."""
        ratio = self.cfg.train.encoder_lr_ratio
        encoder = getattr(self.model, "encoder", None)
        params: Any = self.model.parameters()
        if ratio != 1.0 and isinstance(encoder, torch.nn.Module):  # two groups: the schedule scales both alike
            enc = {id(p) for p in encoder.parameters()}
            params = [
                {"params": list(encoder.parameters()), "lr": self.cfg.optimizer.lr * ratio},
                {"params": [p for p in self.model.parameters() if id(p) not in enc]},
            ]
        opt = build_optimizer(params, self.cfg.optimizer)
        sched = build_scheduler(opt, self.cfg.optimizer, self.total_steps, self._time_progress)
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Lightning hook: keep the validation history, the best and last epochs and their units in the checkpoint."""
        units = {k: v.tolist() for k, v in getattr(self, "unit_cms", {}).items()}
        checkpoint["terraseg"] = {
            "history": self.history,
            "best": self.best,
            "last": getattr(self, "last", {}),
            "units": units,
            "last_step": getattr(self, "last_step", None),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Lightning hook: restore the validation history, the best and last epochs and their units (resume)."""
        state = checkpoint.get("terraseg", {})
        self.history = list(state.get("history", []))
        self.best = dict(state.get("best", {}))
        self.last = dict(state.get("last", {}))
        self.unit_cms = {k: np.asarray(v, dtype=np.int64) for k, v in state.get("units", {}).items()}
        self.last_step = state.get("last_step")

    def record_validation(self, logs: dict[str, float], extra: dict[str, Any] | None = None) -> None:
        """Log an epoch's validation figures (``logs`` holds ``val/score``), keep the history and the best epoch."""
        s = logs["val/score"]
        self.log_dict({k: v for k, v in logs.items() if k != "val/score"}, prog_bar=False)
        self.log("val/score", s, prog_bar=True)
        if self.trainer.sanity_checking:
            return
        entry = {"epoch": self.current_epoch, **logs}
        self.history.append(entry)
        self.last = entry | ({"per_class": extra} if extra else {})
        self.last_step = self.global_step  # the optimiser step the last validated weights are at
        if not self.best or s > self.best["val/score"]:
            self.best = self.last


class SegmentationModule(ModuleBase):
    """Network + loss + optimiser; validation runs the real sliding-window predictor over whole scenes.

    Validation is the procedure ``terraseg evaluate`` uses with the bundle's defaults (Hann-blended
    windows of ``predict_window`` pixels, overlap 0.25), so ``val/score`` is the figure a user gets.
    The validation loader yields scene indexes into :attr:`val_scenes`; each step predicts one scene
    and adds its confusion matrix. Logged per epoch: ``train/loss`` and the figures of
    :func:`terraseg.evaluation.metrics.validation_metrics` (``val/score`` = positive-class IoU for
    binary tasks, else mIoU; ``val/miou``, ``val/iou``, ``val/dice``, ``val/iou_<class>``).

    Args:
        config: the experiment config as a plain dict (saved in checkpoints as hyperparameters).
        in_channels: input bands.
        total_steps: optimiser steps of the whole run (for schedules).
    """

    def __init__(self, config: dict[str, Any], in_channels: int, total_steps: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg = ExperimentConfig.model_validate(config)
        c = self.cfg
        self.model = build_model(c.model, in_channels, c.num_classes, band_names=c.data.band_names)
        self.loss_fn = CombinedLoss(c.loss, c.num_classes, c.ignore_index)
        self.total_steps = total_steps
        self._units: list[np.ndarray] = []  # one confusion matrix per validation scene (a held-out block or image)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.last: dict[str, Any] = {}  # the last validated epoch's figures
        self.unit_cms: dict[str, np.ndarray] = {}  # "best", "last": (U, K, K) validation confusion matrices per unit
        self.val_scenes: list[Any] = []
        self.val_stats: NormStats | None = None
        self.train_stats: NormStats | None = None  # set when the loader yields raw windows (normalised on the device)
        self.val_window = max(c.data.window, MIN_PREDICT_WINDOW)
        self.augment_on_device = c.data.augment  # the loader only reads; see terraseg.training.augment

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Loss of one batch of windows (``image`` ``(N, C, H, W)``, ``mask`` ``(N, H, W)``), logged as ``train/loss``."""
        logits = self.model(batch["image"])
        loss = self.loss_fn(logits, batch["mask"])
        self.log(
            "train/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch["image"].shape[0],
            sync_dist=self.trainer.world_size > 1,
        )
        return loss

    def _predictor(self) -> SlidingWindowPredictor:
        assert self.val_stats is not None, "set val_stats before validating"
        # the defaults `terraseg evaluate` uses, so val/score is what users get
        return validation_predictor(
            self.model, self.cfg, self.val_stats, self.val_window, InferenceConfig().fit_max, str(self.device)
        )

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Predict one validation scene as ``predict`` would (sliding windows) and add its confusion matrix."""
        if int(batch) < 0:  # a DDP rank without a validation scene of its own (ShardSampler's padding)
            return
        scene = self.val_scenes[int(batch)]
        m = evaluate_scenes(self._predictor(), [scene], [c.name for c in self.cfg.classes], self.cfg.ignore_index)
        self._units.append(np.asarray(m["confusion_matrix"], dtype=np.int64))

    def on_validation_epoch_end(self) -> None:
        """The epoch's validation figures from the summed confusion matrix (gathered over DDP ranks)."""
        k = self.cfg.num_classes
        cm = np.sum(self._units, axis=0) if self._units else np.zeros((k, k), dtype=np.int64)
        if self.trainer.world_size > 1:  # DDP: each rank predicted its share of the scenes (ShardSampler)
            cm = self.all_gather(torch.from_numpy(cm)).sum(0).cpu().numpy()  # type: ignore[union-attr]
        m = validation_metrics(cm, [c.name for c in self.cfg.classes])
        per_class = m.pop("per_class")
        if self.trainer.world_size == 1 and self._units:  # the 95% interval over the held-out units
            m |= interval_logs(np.stack(self._units))
        self.record_validation(m, per_class)
        if self.trainer.world_size == 1 and self._units and not self.trainer.sanity_checking:
            # the units of the last and the best epoch, for the choice of the network to keep (keep_epoch)
            self.unit_cms["last"] = np.stack(self._units)
            if self.best.get("epoch") == self.current_epoch:
                self.unit_cms["best"] = self.unit_cms["last"]
        self._units = []
