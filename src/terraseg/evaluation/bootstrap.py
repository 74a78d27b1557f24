"""Confidence intervals for every score: a bootstrap over the hold-out's units.

Pixels of one image are not independent draws: neighbours share errors (a missed building is hundreds of
wrong pixels). The units that are close to independent are the hold-out's spatial blocks (raster scenes,
cut into blocks as the hold-out cuts them) and whole images (folders of photos). Each unit contributes one
confusion matrix; a bootstrap replicate draws as many units with replacement, sums their matrices and
recomputes the score. The 2.5th and 97.5th percentiles of 2,000 replicates bound the 95% interval (the
percentile bootstrap, Efron and Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13; resampling
blocks rather than pixels is the block bootstrap for spatially dependent data, Lahiri, *Resampling Methods for
Dependent Data*, 2003). The paired difference of two models resamples the same units for both
(:func:`paired_difference`), so shared difficulty cancels.

An interval wider than :data:`WIDE` means the figure cannot separate models that differ by less; the reports
say so, and what would narrow it (more labelled blocks, a larger ``val_fraction``, a test scene).
"""

from __future__ import annotations

from typing import Any

import numpy as np

DRAWS = 2000
LEVEL = 0.95
WIDE = 0.1  # an interval wider than this is called out where the figure is printed
METHOD = (
    "percentile bootstrap over the hold-out's units (spatial blocks of scenes, whole images), "
    f"{DRAWS} draws (Efron and Tibshirani 1993)"
)


def _scores(cms: np.ndarray) -> dict[str, np.ndarray]:
    """Scores of a stack of confusion matrices ``(B, K, K)``: ``score``, ``miou`` and, binary, ``iou``/``dice``.

    ``score`` is :func:`terraseg.evaluation.metrics.score` vectorised: the positive class's IoU for binary tasks
    (NaN in a replicate without a labelled pixel of it: such replicates are left out of the interval), else the
    mean IoU of the classes with labelled pixels.
    """
    tp = np.diagonal(cms, axis1=1, axis2=2).astype(np.float64)
    support = cms.sum(axis=2)
    union = support + cms.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        present = support > 0
        miou = np.where(present.any(1), np.nansum(np.where(present, iou, 0.0), 1) / np.maximum(present.sum(1), 1), np.nan)
        out = {"miou": miou, "score": miou}
        if cms.shape[1] == 2:
            dice = np.where(union + tp > 0, 2 * tp / (union + tp), np.nan)
            # a replicate that drew no unit with the positive class has no positive-class score: left out (NaN)
            iou1, dice1 = (
                np.where(present[:, 1], np.nan_to_num(iou[:, 1]), np.nan),
                np.where(present[:, 1], np.nan_to_num(dice[:, 1]), np.nan),
            )
            out |= {"iou": iou1, "dice": dice1, "score": iou1}
    return out


def resample_weights(units: int, draws: int, seed: int) -> np.ndarray:
    """``(draws, units)`` bootstrap counts: how often each unit is drawn in each replicate.

    Args:
        units: U, the units to draw from.
        draws: replicates.
        seed: the generator's seed.
    """
    rng = np.random.default_rng(seed)
    return rng.multinomial(units, np.full(units, 1.0 / units), size=draws).astype(np.float64)


def _interval(values: np.ndarray, level: float) -> list[float] | None:
    v = values[np.isfinite(values)]
    if v.size < 10:
        return None
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return [round(float(lo), 4), round(float(hi), 4)]


def bootstrap_intervals(unit_cms: np.ndarray, draws: int = DRAWS, level: float = LEVEL, seed: int = 0) -> dict[str, Any]:
    """95% intervals of the scores of a hold-out from its units' confusion matrices.

    Args:
        unit_cms: ``(U, K, K)`` confusion matrices (rows true, columns predicted), one per unit.
        draws: bootstrap replicates.
        level: the interval's coverage.
        seed: the replicates' seed.

    Returns:
        ``{"level", "units", "method", "score": [low, high], "miou": [...], and, binary, "iou", "dice"}``; an
        interval is None when fewer than two units hold labelled pixels (no spread can be estimated).
    """
    cms = np.asarray(unit_cms, dtype=np.float64)
    cms = cms[cms.reshape(len(cms), -1).sum(1) > 0] if len(cms) else cms
    out: dict[str, Any] = {"level": level, "units": int(len(cms)), "method": METHOD}
    if len(cms) < 2:
        return out | {k: None for k in ("score", "miou", *(("iou", "dice") if cms.ndim == 3 and cms.shape[1] == 2 else ()))}
    stats = _scores(np.einsum("bu,ukl->bkl", resample_weights(len(cms), draws, seed), cms))
    return out | {k: _interval(v, level) for k, v in stats.items()}


def paired_difference(
    cms_a: np.ndarray, cms_b: np.ndarray, key: str = "score", draws: int = DRAWS, level: float = LEVEL, seed: int = 0
) -> dict[str, Any]:
    """The difference ``A - B`` of two models' scores on the same units, with its paired bootstrap interval.

    Args:
        cms_a: ``(U, K, K)`` confusion matrices of models A and B on the same U units, in the same order.
        cms_b: ``(U, K, K)`` confusion matrices of models A and B on the same U units, in the same order.
        key: which score (``score``, ``miou``, ``iou``, ``dice``).
        draws: as :func:`bootstrap_intervals`.
        level: as :func:`bootstrap_intervals`.
        seed: as :func:`bootstrap_intervals`.

    Returns:
        ``{"difference", "interval": [low, high] or None, "units", "level", "separates": bool}``; ``separates``
        is True when the interval excludes 0.

    Raises:
        ValueError: the two stacks differ in shape (not the same units).
    """
    a, b = np.asarray(cms_a, dtype=np.float64), np.asarray(cms_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired units differ: {a.shape} vs {b.shape}")
    diff = float(_scores(a.sum(0)[None])[key][0] - _scores(b.sum(0)[None])[key][0])
    out: dict[str, Any] = {
        "difference": round(diff, 4),
        "units": int(len(a)),
        "level": level,
        "interval": None,
        "separates": False,
    }
    if len(a) >= 2:
        w = resample_weights(len(a), draws, seed)
        d = _scores(np.einsum("bu,ukl->bkl", w, a))[key] - _scores(np.einsum("bu,ukl->bkl", w, b))[key]
        iv = _interval(d, level)
        out |= {"interval": iv, "separates": bool(iv and (iv[0] > 0 or iv[1] < 0))}
    return out


def format_interval(value: float | None, interval: list[float] | None) -> str:
    """``0.5123 [0.4710, 0.5540]``; ``-`` without a value, a note when there is no interval.

    Args:
        value: the score.
        interval: its ``[low, high]`` or None.
    """
    if value is None:
        return "-"
    return f"{value:.4f}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else " (no interval: one unit)")


def width_warning(interval: list[float] | None, units: int, where: str) -> str | None:
    """One sentence when an interval is too wide to decide by (wider than :data:`WIDE`), else None.

    Args:
        interval: ``[low, high]`` or None.
        units: how many units it rests on.
        where: ``"validation"`` or ``"test"``.
    """
    if interval is None:
        return (
            f"the {where} figure rests on {units} unit(s): no interval can be estimated; more labelled blocks "
            "(a larger data.val_fraction) or a test scene would give one"
        )
    if interval[1] - interval[0] <= WIDE:
        return None
    return (
        f"the {where} figure's 95% interval [{interval[0]:.3f}, {interval[1]:.3f}] is wider than {WIDE:g} ({units} "
        f"units): it cannot separate models that differ by less; more labelled blocks, a larger data.val_fraction "
        f"or a labelled test scene would narrow it"
    )


__all__ = [
    "DRAWS",
    "LEVEL",
    "METHOD",
    "WIDE",
    "bootstrap_intervals",
    "format_interval",
    "paired_difference",
    "resample_weights",
    "width_warning",
]
