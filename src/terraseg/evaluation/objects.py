"""Object scores for classes of discrete objects (buildings, defects): the SpaceNet metric.

Pixel IoU rewards a map that is right on average; a user counting buildings needs each one found once.
SpaceNet's metric (Van Etten, Lindenbaum and Bacastow, *SpaceNet: A Remote Sensing Dataset and Challenge
Series*, 2018; solaris ``Evaluator``) matches predicted and true footprints one to one where their IoU is at
least 0.5, then counts true positives (matched pairs), false positives (unmatched predictions) and false
negatives (unmatched truths): precision, recall and F1 follow. Footprints under 20 pixels are left out on both
sides, as SpaceNet 2 left out buildings under 20 pixels.

Here a footprint is a connected region (8-connectivity, ``scipy.ndimage.label``) of the positive class in the
predicted and in the true class map, the raster form of the polygons ``terraseg vectorize`` writes. Adjacent
true buildings burnt into one region count as one object (the raster labels cannot tell them apart). Matching
is greedy by IoU, highest first; above 0.5 a match is unique anyway (two regions cannot both overlap a third
by more than half of their union). A predicted region mostly on unknown pixels (``ignore_index``) is not
counted. Each object is placed in the bootstrap unit holding its centre, so object scores carry the same 95%
intervals as the pixel scores (:mod:`terraseg.evaluation.bootstrap`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MATCH_IOU = 0.5  # SpaceNet's threshold
MIN_PIXELS = 20  # SpaceNet 2 left out footprints under 20 pixels
MAX_PIXELS = 64_000_000  # scenes above this many pixels are not held whole for object scores (about 0.6 GB at this size)


def _regions(binary: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy import ndimage

    labels, n = ndimage.label(binary, structure=np.ones((3, 3), dtype=bool))
    return labels, int(n)


def _centres(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(areas, centre rows, centre columns) of regions 1..n (index 0 unused; centres of their bounding boxes)."""
    from scipy import ndimage

    area = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64)
    r, c = np.zeros(n + 1), np.zeros(n + 1)
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is not None:
            r[k], c[k] = (box[0].start + box[0].stop - 1) / 2, (box[1].start + box[1].stop - 1) / 2
    return area, r, c


def match_objects(
    pred: np.ndarray, truth: np.ndarray, positive: int = 1, ignore_index: int = 255, unit_side: int | None = None
) -> dict[str, Any]:
    """Match predicted and true objects of class ``positive`` one to one at IoU >= 0.5.

    Args:
        pred: ``(H, W)`` predicted class ids (negative: nodata).
        truth: ``(H, W)`` true class ids with ``ignore_index`` for unknown pixels.
        positive: the object class id.
        unit_side: bootstrap units: blocks of this many pixels (None: the whole array is one unit).

    Returns:
        ``{"tp", "fp", "fn", "units": (U, 3) int64 array of per-unit (tp, fp, fn)}``.
    """
    known = truth != ignore_index
    t_lab, nt = _regions((truth == positive) & known)
    p_lab, np_ = _regions(pred == positive)
    t_area, t_r, t_c = _centres(t_lab, nt)
    p_area, p_r, p_c = _centres(p_lab, np_)
    p_known = p_area - np.bincount(p_lab[~known], minlength=np_ + 1)
    t_ok = t_area >= MIN_PIXELS
    p_ok = (p_area >= MIN_PIXELS) & (p_known > 0.5 * p_area)
    t_ok[0] = p_ok[0] = False
    both = (t_lab > 0) & (p_lab > 0)
    pairs = t_lab[both].astype(np.int64) * (np_ + 1) + p_lab[both]
    uniq, inter = np.unique(pairs, return_counts=True)
    ti, pi = np.divmod(uniq, np_ + 1)
    iou = inter / (t_area[ti] + p_area[pi] - inter)
    keep = (iou >= MATCH_IOU) & t_ok[ti] & p_ok[pi]
    matched_t, matched_p = np.zeros(nt + 1, bool), np.zeros(np_ + 1, bool)
    for k in np.argsort(-iou[keep], kind="stable"):
        a, b = ti[keep][k], pi[keep][k]
        if not matched_t[a] and not matched_p[b]:
            matched_t[a] = matched_p[b] = True
    h, w = truth.shape
    side = int(unit_side) if unit_side and max(h, w) > unit_side else max(h, w, 1)
    ncols = -(-w // side)
    nunits = -(-h // side) * ncols

    def unit(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return (np.clip(r, 0, h - 1).astype(np.int64) // side) * ncols + np.clip(c, 0, w - 1).astype(np.int64) // side

    units = np.zeros((nunits, 3), dtype=np.int64)
    tp_t = t_ok & matched_t
    np.add.at(units[:, 0], unit(t_r[tp_t], t_c[tp_t]), 1)
    fp_p = p_ok & ~matched_p
    np.add.at(units[:, 1], unit(p_r[fp_p], p_c[fp_p]), 1)
    fn_t = t_ok & ~matched_t
    np.add.at(units[:, 2], unit(t_r[fn_t], t_c[fn_t]), 1)
    return {"tp": int(tp_t.sum()), "fp": int(fp_p.sum()), "fn": int(fn_t.sum()), "units": units}


def object_scores(units: np.ndarray, draws: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Precision, recall and F1 of matched objects with their 95% intervals over the units.

    Args:
        units: ``(U, 3)`` per-unit (tp, fp, fn) counts.
        draws: the bootstrap's (:mod:`terraseg.evaluation.bootstrap`).
        seed: the bootstrap's (:mod:`terraseg.evaluation.bootstrap`).

    Returns:
        ``{"match_iou", "min_pixels", "tp", "fp", "fn", "precision", "recall", "f1", "intervals": {"precision",
        "recall", "f1"}, "units"}``; a figure is None where its denominator is 0.
    """
    units = np.asarray(units, dtype=np.float64).reshape(-1, 3)
    tp, fp, fn = units.sum(0)

    def ratios(t, f_p, f_n):
        with np.errstate(invalid="ignore", divide="ignore"):
            return (
                np.where(t + f_p > 0, t / (t + f_p), np.nan),
                np.where(t + f_n > 0, t / (t + f_n), np.nan),
                np.where(2 * t + f_p + f_n > 0, 2 * t / (2 * t + f_p + f_n), np.nan),
            )

    point = [None if np.isnan(v) else round(float(v), 4) for v in ratios(tp, fp, fn)]
    busy = units[units.sum(1) > 0]
    intervals: dict[str, list[float] | None] = {"precision": None, "recall": None, "f1": None}
    if len(busy) >= 2:
        from terraseg.evaluation.bootstrap import LEVEL, resample_weights

        w = resample_weights(len(busy), draws, seed)
        s = w @ busy
        for name, v in zip(("precision", "recall", "f1"), ratios(s[:, 0], s[:, 1], s[:, 2])):
            v = v[np.isfinite(v)]
            if v.size >= 10:
                lo, hi = np.percentile(v, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
                intervals[name] = [round(float(lo), 4), round(float(hi), 4)]
    return {
        "match_iou": MATCH_IOU,
        "min_pixels": MIN_PIXELS,
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "precision": point[0],
        "recall": point[1],
        "f1": point[2],
        "intervals": intervals,
        "units": int(len(busy)),
    }


__all__ = ["MATCH_IOU", "MAX_PIXELS", "MIN_PIXELS", "match_objects", "object_scores"]
