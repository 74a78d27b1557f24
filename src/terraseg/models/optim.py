"""Optimisers and learning-rate schedules from :class:`terraseg.config.OptimizerConfig`.

Adam/AdamW/SGD from torch; Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms",
2023) from timm. Schedules are functions of training *progress* in [0, 1], stepped per batch:
progress is the larger of steps done / planned steps and, when a time limit is set, time used /
time allowed, so a run cut short by its time budget still anneals its learning rate.

* ``onecycle``: linear warm-up over the first 10% from lr/25 to lr, then cosine annealing to
  lr/1e4 (Smith & Topin, "Super-Convergence", 2017).
* ``cosine``: cosine annealing from lr to 0 (Loshchilov & Hutter, SGDR, 2017).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from timm.optim import Lion

from terraseg.config import OptimizerConfig


def build_optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Create the optimiser for ``params``.

    Args:
        params: the parameters (or parameter groups) to optimise.
        cfg: the optimiser config (name, lr, weight decay).
    """
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    return Lion(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(name: str, progress: float) -> float:
    """Multiplier of the peak learning rate at ``progress`` in [0, 1] for schedule ``name``.

    Args:
        name: the schedule (``onecycle``, ``cosine`` or ``none``).
        progress: share of the planned steps done.
    """
    p = min(max(progress, 0.0), 1.0)
    if name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    if name == "onecycle":
        warm = 0.1
        if p < warm:
            return 1 / 25 + (1 - 1 / 25) * p / warm
        q = (p - warm) / (1 - warm)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * q))
    return 1.0


def build_scheduler(
    opt: torch.optim.Optimizer, cfg: OptimizerConfig, total_steps: int, time_progress: Callable[[], float] | None = None
):
    """Per-step scheduler following :func:`lr_factor`, or None for ``scheduler: none``.

    Args:
        opt: the optimiser.
        cfg: its config.
        total_steps: planned optimiser steps.
        time_progress: returns time used / time allowed (0 without a time limit).
    """
    if cfg.scheduler == "none":
        return None
    tp = time_progress or (lambda: 0.0)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(cfg.scheduler, max(step / max(total_steps, 1), tp())))
