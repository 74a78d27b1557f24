"""Optimisers and schedules from :class:`terraseg.config.OptimizerConfig`.

Adam/AdamW/SGD from torch; Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms",
2023) from timm. Schedules: cosine annealing and one-cycle (Smith & Topin 2017), stepped per batch.
"""

from __future__ import annotations

import torch
from timm.optim import Lion

from terraseg.config import OptimizerConfig


def build_optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Create the optimiser for ``params``."""
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    return Lion(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(opt: torch.optim.Optimizer, cfg: OptimizerConfig, total_steps: int):
    """Per-step learning-rate scheduler, or None."""
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total_steps, 2), pct_start=0.1)
    return None
