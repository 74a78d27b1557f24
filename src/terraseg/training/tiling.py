"""Which tiling a segmentation bundle predicts small images with, chosen on the validation scenes.

Images no larger than ``fit_max`` (1024 px by default) are predicted as one window, rounded up to a
multiple of 32: the fastest path (one forward per image, batched across images of one size). A
network trained on smaller windows may do better on them with overlapping windows of its
``predict_window`` blended by a Hann window (a shift ensemble at the overlaps, and the context
it was trained with): on the magnetic-tile defects one model scored Dice 0.801 as one window and
0.841 with 256 px windows (README). After training, the best weights are validated both ways
and the bundle records the better (``input.fit_max = 0`` for sliding windows); a tie, within
``MARGIN`` of the validation score, keeps the faster single window. ``--window`` or ``--fit-max``
still choose per run.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from terraseg.config import ExperimentConfig
from terraseg.config.inference import InferenceConfig
from terraseg.data.normalize import NormStats
from terraseg.data.scenes import Scene
from terraseg.devices import inference_precision
from terraseg.evaluation.metrics import validation_metrics
from terraseg.evaluation.report import evaluate_scenes
from terraseg.infer.sliding import SlidingWindowPredictor, TorchBackend

log = logging.getLogger(__name__)

MARGIN = 0.005  # validation score (IoU of the positive class / mIoU) sliding windows must win by


def validation_predictor(
    model: torch.nn.Module, cfg: ExperimentConfig, stats: NormStats, window: int, fit_max: int, device: str
) -> SlidingWindowPredictor:
    """The predictor validation scores with: ``terraseg evaluate``'s defaults (overlap, Hann blending) on ``model``
    in the training precision and layout, ``cfg.data.batch_size`` windows per forward.

    Args:
        model: the network.
        cfg: the experiment.
        stats: the training normalisation.
        window: sliding-window side (pixels).
        fit_max: largest image side predicted as one window (0: always sliding).
        device: torch device.
    """
    precision = inference_precision(cfg.training_precision())
    backend = TorchBackend(model, device=device, precision=precision, channels_last=cfg.train.channels_last)
    return SlidingWindowPredictor(
        backend, stats, cfg.num_classes, window, InferenceConfig().overlap, cfg.data.batch_size, fit_max
    )


def choose_tiling(
    model: torch.nn.Module,
    scenes: list[Scene],
    stats: NormStats,
    cfg: ExperimentConfig,
    predict_window: int,
    one_window: float | None = None,
) -> dict[str, Any] | None:
    """Validate ``model`` on ``scenes`` as one window per image and with sliding windows; report the better.

    Args:
        model: the trained network (its best weights).
        scenes: the validation scenes.
        stats: the training normalisation.
        cfg: the experiment (classes, ignore_index, device, precision, batch size).
        predict_window: the bundle's sliding-window side in pixels.
        one_window: the one-window score when already known (training's best ``val/score``: validation predicts with the
            same settings), else computed here.

    Returns:
        None when no scene fits one window (nothing to choose); else ``{"one_window": score, "sliding":
        score, "fit_max": 0 or None}`` with the validation scores (``val/score``) and the ``input.fit_max``
        the bundle takes (None: the inference default).
    """
    names = [c.name for c in cfg.classes]
    device = cfg.training_device()

    def score(fit_max: int) -> float:
        pred = validation_predictor(model, cfg, stats, predict_window, fit_max, device)
        cm = np.asarray(evaluate_scenes(pred, scenes, names, cfg.ignore_index)["confusion_matrix"], dtype=np.int64)
        return float(validation_metrics(cm, names)["val/score"])

    fit_max = InferenceConfig().fit_max
    if not any(0 < max(s.height, s.width) <= fit_max for s in scenes):  # as SlidingWindowPredictor.geometry decides
        return None
    model.to(device)
    scores = {"one_window": score(fit_max) if one_window is None else float(one_window), "sliding": score(0)}
    model.cpu().to(memory_format=torch.contiguous_format)  # as it came: the bundle stores it
    sliding = scores["sliding"] > scores["one_window"] + MARGIN
    log.info(
        "tiling on the validation scenes: one window %.4f, sliding windows of %d px %.4f: %s",
        scores["one_window"],
        predict_window,
        scores["sliding"],
        "sliding windows" if sliding else "one window",
    )
    return scores | {"fit_max": 0 if sliding else None}


__all__ = ["MARGIN", "choose_tiling", "validation_predictor"]
