"""``terraseg cv``: K-fold cross-validation of a segmentation config, spatial blocks against a random split.

Neighbouring pixels look alike, so a model validated on windows next to its training windows
scores higher than it will on new places (Roberts et al., "Cross-validation strategies for data
with temporal, spatial, hierarchical, or phylogenetic structure", Ecography 40, 2017; Ploton et al.,
Nature Communications 11, 2020). ``cv`` measures both, on the same data and budget:

* **spatial**: every raster scene of the config's training (and validation) sources is cut into
  square blocks of ``block_size`` CRS units (pixels for plain images); whole blocks are dealt to K
  folds of near-equal pixel counts (:func:`terraseg.prepare.split.assign_blocks`). Fold k validates on
  its blocks and trains on the rest, minus a ``buffer`` around the validation blocks (blockCV's
  buffer): those labels are set to ``ignore_index`` in training (the imagery stays, as context only).
* **random**: the same with small blocks (a quarter of the spatial block side, at most one training
  window), dealt at random, no buffer: what a random train/validation split of chips gives.

Folder pairs (small images) are dealt to folds whole in both. Each fold trains with the config
(tracking, ONNX export and calibration off) and is scored on its validation part by the real
predictor (``val/*``). Networks are scored after their last epoch, not their best one (choosing
the epoch on the validation fold would bias it). Printed and written to ``cv.json``: every fold's
figures, their mean and standard deviation per method, and the gap (random - spatial).
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from terraseg.config import ExperimentConfig
from terraseg.data.rasters import RasterScene
from terraseg.data.scenes import Region, Scene
from terraseg.data.sources import build_scenes
from terraseg.data.windows import grid_windows
from terraseg.errors import ConfigError, InputFileError
from terraseg.io.atomic import output_folder, write_text_atomic
from terraseg.prepare.split import assign_blocks
from terraseg.tasks import task_named

log = logging.getLogger(__name__)

METRICS = ("val/score", "val/miou", "val/dice")


@dataclass
class CVResult:
    """Per-fold figures, and their summary per method.

    Attributes:
        folds: ``{method: [{"fold": k, "val/score": ..., ...}]}``.
        summary: ``{method: {metric: {"mean", "std"}}}``.
        gap: ``{metric: random mean - spatial mean}`` (positive: the random split flatters the model).
        path: the written ``cv.json``.
    """

    folds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    summary: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    gap: dict[str, float] = field(default_factory=dict)
    path: Path | None = None


def _block_pixels(scene: Scene, size: float) -> int:
    """Block side in pixels for ``size`` CRS units on this scene (pixels when it has no CRS)."""
    res = abs(scene.transform.a) if scene.crs is not None else 1.0
    return max(1, int(round(size / max(res, 1e-12))))


def fold_scenes(
    scenes: list[Scene], folds: int, block_size: float, buffer: float, seed: int
) -> list[tuple[list[Scene], list[Scene]]]:
    """``(training scenes, validation scenes)`` of each of ``folds`` folds.

    Args:
        scenes: the labelled scenes.
        folds: K.
        block_size: block side in CRS units (pixels without a CRS).
        buffer: CRS units around validation blocks whose labels are left out of training.
        seed: seed of the deal (every block is dealt on its own, in a seeded random order; the random split is this with
            blocks one window wide and no buffer).

    Returns:
        One ``(train, val)`` pair per fold; rasters appear in ``train`` with their held-out labels excluded.

    Raises:
        ConfigError: fewer blocks than folds.
    """
    units: list[tuple[int, Region | None]] = []
    keys: list[tuple] = []
    for i, s in enumerate(scenes):
        if isinstance(s, RasterScene):
            b = _block_pixels(s, block_size)
            for w in grid_windows(s.height, s.width, b, edge="clip"):
                units.append((i, Region(w.row, w.col, w.height, w.width)))
                keys.append((i, w.row // b, w.col // b))
        else:
            units.append((i, None))
            keys.append((i, 0, 0))
    if len(units) < folds:
        raise ConfigError(
            f"{len(units)} blocks of {block_size:g} units for {folds} folds; use smaller --block-size or fewer folds."
        )
    assign = assign_blocks(keys, tuple([1.0 / folds] * folds), seed)
    out = []
    for k in range(folds):
        val: list[Scene] = []
        held: dict[int, list[Region]] = {}
        for (i, region), f in zip(units, assign):
            if f != k:
                continue
            if region is None:
                val.append(scenes[i])
                held[i] = []
            else:
                val.append(scenes[i].restricted(region))  # type: ignore[attr-defined]
                pad = _block_pixels(scenes[i], buffer) if buffer > 0 else 0
                held.setdefault(i, []).append(
                    Region(region.row_off - pad, region.col_off - pad, region.height + 2 * pad, region.width + 2 * pad)
                )
        train: list[Scene] = []
        for i, s in enumerate(scenes):
            if i in held and not held[i]:
                continue  # a whole small image held out
            if i in held:
                s = copy.copy(s)
                s.exclude = tuple(held[i])
                s._cached = None
            train.append(s)
        if not train:
            raise ConfigError(f"fold {k} leaves no training data; use more folds or smaller blocks.")
        out.append((train, val))
    return out


def _figures(res, network: bool) -> dict[str, float]:
    """The fold's validation figures: the last epoch's (networks) or the fit's (pixel baselines)."""
    last = res.history[-1] if network and res.history else res.best
    return {k: float(v) for k, v in last.items() if k.startswith("val/") and isinstance(v, (int, float))}


def cross_validate(
    cfg: ExperimentConfig,
    folds: int = 5,
    block_size: float | None = None,
    buffer: float = 0.0,
    compare_random: bool = True,
    out_dir: str | Path | None = None,
) -> CVResult:
    """Train and score ``folds`` folds with spatial blocks (and, when asked, with a random split) (module docstring).

    Args:
        cfg: a segmentation experiment config.
        folds: K (>= 2).
        block_size: spatial block side in CRS units (default: 4 training windows of the first scene's pixels).
        buffer: CRS units around validation blocks left out of training.
        compare_random: also run the random split.
        out_dir: where fold runs and ``cv.json`` go (default ``<run folder>/cv``).

    Returns:
        :class:`CVResult`.

    Raises:
        ConfigError: a classification config, fewer blocks than folds.
        InputFileError: unlabelled data.
    """
    from terraseg.training.run import train

    if not task_named(cfg.task).dense:
        raise ConfigError("cv cross-validates segmentation configs (classification: use split folds and `evaluate`).")
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}.")
    d = cfg.data
    scenes = build_scenes(list(d.train) + list(d.val), d, cfg.ignore_index, cfg.num_classes)
    if not any(s.has_labels for s in scenes):
        raise InputFileError("cv: the config's sources hold no labels.")
    from terraseg.data.census import require_two_classes
    from terraseg.data.holdout import class_pixels

    require_two_classes(class_pixels(scenes, cfg.num_classes), [c.name for c in cfg.classes], scenes, "train")
    first = scenes[0]
    res = abs(first.transform.a) if first.crs is not None else 1.0
    block = block_size or 4 * d.window * res
    out = output_folder(Path(out_dir) if out_dir else cfg.run_dir() / "cv")  # refused before any fold trains
    result = CVResult()
    # the random split deals small blocks (a quarter of the spatial block, at most one training window) at random
    methods = [("spatial", block, buffer)] + ([("random", min(d.window * res, block / 4), 0.0)] if compare_random else [])
    for method, size, buf in methods:
        rows = []
        for k, (tr, va) in enumerate(fold_scenes(scenes, folds, size, buf, cfg.train.seed)):
            fold_cfg = cfg.model_copy(deep=True)
            fold_cfg.output_dir = str(out / method / f"fold{k}")
            fold_cfg.name = f"{cfg.name}-{method}-fold{k}"
            fold_cfg.tracking.enabled = False
            fold_cfg.train.export_onnx = False
            fold_cfg.train.calibrate = False
            log.info("cv %s fold %d/%d: %d training scenes, %d validation parts", method, k + 1, folds, len(tr), len(va))
            r = train(fold_cfg, scenes=(tr, va))
            rows.append({"fold": k, "validation_parts": len(va), **_figures(r, not cfg.pixel_model)})
        result.folds[method] = rows
        result.summary[method] = {
            m: {
                "mean": float(np.mean([r[m] for r in rows if m in r])),
                "std": float(np.std([r[m] for r in rows if m in r], ddof=1)) if len(rows) > 1 else 0.0,
            }
            for m in METRICS
            if any(m in r for r in rows)
        }
    if compare_random:
        result.gap = {
            m: result.summary["random"][m]["mean"] - result.summary["spatial"][m]["mean"]
            for m in result.summary["spatial"]
            if m in result.summary["random"]
        }
    result.path = out / "cv.json"
    write_text_atomic(
        result.path,
        json.dumps(
            {
                "config": cfg.name,
                "folds": folds,
                "block_size": block,
                "buffer": buffer,
                "per_fold": result.folds,
                "summary": result.summary,
                "gap_random_minus_spatial": result.gap,
            },
            indent=2,
        ),
    )
    return result


__all__ = ["CVResult", "cross_validate", "fold_scenes"]
