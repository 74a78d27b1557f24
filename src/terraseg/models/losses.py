"""Loss functions from config: Dice, Jaccard (Lovasz-free soft IoU), (B)CE and Focal, summed.

All come from ``segmentation_models_pytorch.losses`` and honour ``ignore_index``.
Focal: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
"""

from __future__ import annotations

import torch
from segmentation_models_pytorch import losses as L
from torch import nn

from terraseg.config import LossTerm


class _BinaryCE(nn.Module):
    """BCE on one logit channel, ignoring ``ignore_index`` pixels."""

    def __init__(self, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # mean over the kept pixels without boolean indexing or `.any()`: no host-device synchronisation
        keep = target != self.ignore_index
        y = torch.where(keep, target, 0).to(logits.dtype)
        per_pixel = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y, reduction="none")
        k = keep.to(per_pixel.dtype)
        return (per_pixel * k).sum() / k.sum().clamp_min(1.0)


class CombinedLoss(nn.Module):
    """Weighted sum of loss terms. ``forward(logits (N,K,H,W), mask (N,H,W) int64) -> scalar``."""

    def __init__(self, terms: list[LossTerm], num_classes: int, ignore_index: int) -> None:
        super().__init__()
        mode = L.BINARY_MODE if num_classes == 2 else L.MULTICLASS_MODE
        mods = []
        for t in terms:
            if t.name == "dice":
                m: nn.Module = L.DiceLoss(mode, ignore_index=ignore_index)
            elif t.name == "jaccard":
                m = L.JaccardLoss(mode, ignore_index=ignore_index)
            elif t.name == "focal":
                m = L.FocalLoss(mode, ignore_index=ignore_index)
            elif num_classes == 2:
                m = _BinaryCE(ignore_index)
            else:
                m = nn.CrossEntropyLoss(ignore_index=ignore_index)
            mods.append(m)
        self.terms = nn.ModuleList(mods)
        self.weights = [t.weight for t in terms]
        self.names = [t.name for t in terms]

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the terms for logits ``(N, 1 or K, H, W)`` and targets ``(N, H, W)`` (computed in float32)."""
        logits = logits.float()
        return torch.stack([w * m(logits, target) for w, m in zip(self.weights, self.terms)]).sum()
