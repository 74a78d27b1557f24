"""Segmentation metrics derived from one confusion matrix accumulated over a whole data set.

Every figure is micro-averaged over all pixels (the matrix is summed over images before any ratio
is taken); ``ignore_index`` pixels never enter the matrix. For binary tasks ``iou`` and ``dice``
are those of the positive class (id 1), never averaged with the background.
Definitions: IoU = TP / (TP + FP + FN) (Jaccard), Dice/F1 = 2TP / (2TP + FP + FN),
precision = TP / (TP + FP), recall = TP / (TP + FN).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def confusion_matrix(
    pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, num_classes: int, ignore_index: int
) -> np.ndarray:
    """``(K, K)`` int64 counts, rows = truth, columns = prediction, ignoring ``ignore_index`` truth.

    Args:
        pred: predicted class ids, any shape.
        target: true class ids, same shape.
    """
    p = torch.as_tensor(pred).reshape(-1).long()
    t = torch.as_tensor(target).reshape(-1).long()
    keep = (t != ignore_index) & (t >= 0) & (t < num_classes)
    idx = t[keep] * num_classes + p[keep].clamp_(0, num_classes - 1)
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).numpy()


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def metrics_from_confusion(cm: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """All report metrics from a confusion matrix.

    Args:
        cm: ``(K, K)`` int64 confusion matrix, rows true, columns predicted.
        class_names: the K names.

    Returns:
        ``{"pixel_accuracy", "miou", "mean_dice", "per_class": {name: {"iou", "dice", "precision",
        "recall", "support"}}, "confusion_matrix", "pixels"}`` plus ``"iou"``, ``"dice"``,
        ``"precision"``, ``"recall"`` of class 1 for binary tasks. Classes absent from both truth
        and prediction get NaN (written as null) and are left out of the means.
    """
    cm = cm.astype(np.int64)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    iou = _ratio(tp, tp + fp + fn)
    dice = _ratio(2 * tp, 2 * tp + fp + fn)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    total = cm.sum()

    def f(x: float) -> float | None:
        return None if np.isnan(x) else float(x)

    out: dict[str, Any] = {
        "pixels": int(total),
        "pixel_accuracy": f(tp.sum() / total) if total else None,
        "miou": f(np.nanmean(iou)) if not np.isnan(iou).all() else None,
        "mean_dice": f(np.nanmean(dice)) if not np.isnan(dice).all() else None,
        "per_class": {
            name: {
                "iou": f(iou[i]),
                "dice": f(dice[i]),
                "precision": f(precision[i]),
                "recall": f(recall[i]),
                "support": int(cm[i].sum()),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": cm.tolist(),
    }
    if len(class_names) == 2:
        out.update(iou=f(iou[1]), dice=f(dice[1]), f1=f(dice[1]), precision=f(precision[1]), recall=f(recall[1]))
    return out


def absent_classes(metrics: dict[str, Any]) -> list[str]:
    """Names of the classes without a single labelled pixel in the data scored (support 0).

    Args:
        metrics: :func:`metrics_from_confusion` output.
    """
    return [name for name, v in metrics["per_class"].items() if not v["support"]]


def score(metrics: dict[str, Any]) -> float:
    """The model-selection score, over the classes present in the labels (0 when none is).

    Binary tasks: the positive class's IoU when it has labelled pixels. Otherwise the mean IoU of
    the classes with labelled pixels: a class absent from the validation labels (its IoU is 0 or
    undefined whatever the model does) never drives checkpointing or early stopping.

    Args:
        metrics: :func:`metrics_from_confusion` output.
    """
    pc = metrics["per_class"]
    if "iou" in metrics and list(pc.values())[1]["support"]:
        return float(metrics["iou"] or 0.0)
    present = [v["iou"] or 0.0 for v in pc.values() if v["support"]]
    return float(np.mean(present)) if present else 0.0


def interval_logs(unit_cms: np.ndarray, prefix: str = "val") -> dict[str, float]:
    """``{"<prefix>/score_low", "<prefix>/score_high", "<prefix>/units"}``: the 95% bootstrap interval of the
    score over the hold-out's units (:mod:`terraseg.evaluation.bootstrap`); only ``units`` when there is none.

    Args:
        unit_cms: ``(U, K, K)`` confusion matrices, one per unit.
        prefix: the metric prefix.
    """
    from terraseg.evaluation.bootstrap import bootstrap_intervals

    iv = bootstrap_intervals(unit_cms)
    out = {f"{prefix}/units": float(iv["units"])}
    if iv["score"]:
        out |= {f"{prefix}/score_low": iv["score"][0], f"{prefix}/score_high": iv["score"][1]}
    return out


def validation_metrics(cm: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """The validation figures every trainer logs, from one confusion matrix (the one builder).

    Args:
        cm: ``(K, K)`` int64 confusion matrix of the validation pixels.
        class_names: the K names.

    Returns:
        ``{"val/score", "val/miou", "val/iou_<class>"..., "val/pixels"}`` as floats (0 when undefined), plus
        ``"val/iou"`` and ``"val/dice"`` of the positive class for binary tasks, and ``"per_class"``
        (the per-class dict of :func:`metrics_from_confusion`). ``val/score`` is :func:`score`, over the
        classes present; ``val/pixels`` the labelled pixels scored.
    """
    m = metrics_from_confusion(cm, class_names)
    out: dict[str, Any] = {"val/score": score(m), "val/miou": m["miou"] or 0.0, "val/pixels": float(m["pixels"])}
    if "iou" in m:
        out["val/iou"] = m["iou"] or 0.0
        out["val/dice"] = m["dice"] or 0.0
    for name, v in m["per_class"].items():
        out[f"val/iou_{name}"] = v["iou"] if v["iou"] is not None else 0.0
    out["per_class"] = m["per_class"]
    return out
