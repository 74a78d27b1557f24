"""``terraseg evaluate``: predict labelled scenes with the real prediction path and report metrics.

The evaluator runs the same :class:`~terraseg.infer.sliding.SlidingWindowPredictor` as
``terraseg predict`` (so the figures describe what users get), streams each scene strip by strip,
and accumulates one confusion matrix over all pixels of the data set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from terraseg import progress
from terraseg.bundle import Bundle
from terraseg.config.inference import EvaluateConfig
from terraseg.data.scenes import Scene
from terraseg.evaluation.metrics import confusion_matrix, metrics_from_confusion
from terraseg.infer.sliding import Block, SlidingWindowPredictor, predictor_for
from terraseg.io.atomic import atomic_path, write_text_atomic
from terraseg.io.images import write_png
from terraseg.io.render import blend_overlay, colorize, display_rgb


def evaluate_scenes(
    predictor: SlidingWindowPredictor,
    scenes: list[Scene],
    class_names: list[str],
    ignore_index: int,
    colors: list[str] | None = None,
    out_dir: Path | None = None,
    overlays: int = 4,
    overlay_size: int = 512,
    unit_side: int | None = None,
    objects: bool = False,
) -> dict[str, Any]:
    """Metrics over labelled scenes, with 95% intervals; with ``out_dir``, also overlay PNGs (image | truth | prediction).

    Args:
        predictor: the sliding-window predictor of the bundle.
        scenes: labelled scenes.
        class_names: the class names.
        ignore_index: label value never scored.
        colors: class colours of the overlays.
        out_dir: where overlays go (None: none).
        overlays: scenes drawn at most.
        overlay_size: longest side of an overlay panel in pixels.
        unit_side: the bootstrap's units (:mod:`terraseg.evaluation.bootstrap`): None, each scene is one unit (a
            validation block, an image); else scenes larger than this are cut into blocks of this many pixels.
        objects: binary tasks: also match predicted and true objects of class 1 (:mod:`terraseg.evaluation.objects`, the
            SpaceNet metric) in scenes of at most :data:`~terraseg.evaluation.objects.MAX_PIXELS` pixels.

    Returns:
        :func:`~terraseg.evaluation.metrics.metrics_from_confusion` output plus ``"scenes"`` (per-scene pixel
        counts and IoU/mIoU), ``"intervals"`` (:func:`~terraseg.evaluation.bootstrap.bootstrap_intervals`) and
        ``"unit_confusions"``, the ``(U, K, K)`` int64 array behind them (not JSON: callers drop or pair it); with
        ``objects``, ``"objects"`` (:func:`~terraseg.evaluation.objects.object_scores` plus ``"scenes_left_out"``).
    """
    from terraseg.evaluation.bootstrap import bootstrap_intervals
    from terraseg.evaluation.objects import MAX_PIXELS, match_objects, object_scores

    K = len(class_names)
    total = np.zeros((K, K), dtype=np.int64)
    per_scene = []
    overlay_paths = []
    units: list[np.ndarray] = []
    object_units: list[np.ndarray] = []
    objects_left_out = 0
    for si, scene in enumerate(scenes):
        predictor.check_scene(scene)
        cm = np.zeros((K, K), dtype=np.int64)
        want_overlay = out_dir is not None and si < overlays
        crop = _crop_box(scene, overlay_size) if want_overlay else None
        pred_crop = None
        if crop is not None:
            pred_crop = np.zeros((crop[2], crop[3]), dtype=np.int64)
        split = unit_side is not None and max(scene.height, scene.width) > unit_side
        side = int(unit_side or 1)
        ncols = -(-scene.width // side) if split else 1
        blocks = np.zeros((-(-scene.height // side) * ncols if split else 1, K, K), dtype=np.int64)
        whole = objects and K == 2 and scene.height * scene.width <= MAX_PIXELS
        objects_left_out += int(objects and K == 2 and not whole)
        pred_full = np.full((scene.height, scene.width), -1, np.int8) if whole else None
        truth_full = np.full((scene.height, scene.width), ignore_index, np.int16) if whole else None

        def sink(b: Block) -> None:
            nonlocal cm
            n = b.class_ids.shape[0]
            truth = scene.read_mask(b.row, 0, n, scene.width, b.valid)
            if truth is None:
                return
            pred = np.where(b.class_ids < 0, 0, b.class_ids)
            cm += confusion_matrix(pred, truth, K, ignore_index)
            if pred_full is not None and truth_full is not None:
                pred_full[b.row : b.row + n] = b.class_ids
                truth_full[b.row : b.row + n] = truth
            if split:  # one confusion matrix per block of unit_side pixels
                unit = (np.arange(b.row, b.row + n) // side)[:, None] * ncols + (np.arange(scene.width) // side)[None, :]
                keep = (truth != ignore_index) & (truth >= 0) & (truth < K)
                idx = (unit[keep] * K + truth[keep]) * K + np.clip(pred[keep], 0, K - 1)
                blocks.reshape(-1)[:] += np.bincount(idx, minlength=blocks.size)
            if crop is not None and pred_crop is not None:
                r0, c0, h, w = crop
                a, z = max(b.row, r0), min(b.row + n, r0 + h)
                if z > a:
                    pred_crop[a - r0 : z - r0] = b.class_ids[a - b.row : z - b.row, c0 : c0 + w]

        def counted(b: Block) -> None:
            sink(b)
            advance(b.class_ids.shape[0])

        with progress.task(f"evaluate {scene.name}", scene.height, "rows") as advance:
            predictor.predict(scene, counted, probabilities=False)
        total += cm
        units.extend(blocks if split else [cm])
        if pred_full is not None and truth_full is not None:
            object_units.append(match_objects(pred_full, truth_full, 1, ignore_index, unit_side)["units"])
            del pred_full, truth_full
        m = metrics_from_confusion(cm, class_names)
        key = "iou" if K == 2 else "miou"
        per_scene.append({"scene": scene.name, "pixels": m["pixels"], key: m[key]})
        if crop is not None and pred_crop is not None and out_dir is not None:
            r0, c0, h, w = crop
            r = scene.read(r0, c0, h, w)
            truth_crop = r.mask if r.mask is not None else np.zeros((h, w), np.int64)
            cols = colors or ["#000000"] + ["#ff0000"] * (K - 1)
            rgb = display_rgb(r.image, r.valid)
            gap = np.full((3, h, 8), 255, dtype=np.uint8)
            panel = np.concatenate(
                [
                    rgb,
                    gap,
                    colorize(np.where(truth_crop == ignore_index, 0, truth_crop), cols),
                    gap,
                    colorize(np.where(pred_crop < 0, 0, pred_crop), cols),
                    gap,
                    blend_overlay(rgb, pred_crop, cols),
                ],
                axis=2,
            )
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in scene.name)
            target = out_dir / "overlays" / f"{si:02d}_{safe}.png"
            write_png(target, panel)
            overlay_paths.append(str(target))
    out = metrics_from_confusion(total, class_names)
    out["scenes"] = per_scene
    unit_cms = np.stack(units) if units else np.zeros((0, K, K), dtype=np.int64)
    out["intervals"] = bootstrap_intervals(unit_cms) | {"unit": f"blocks of {unit_side} px" if unit_side else "scenes"}
    out["unit_confusions"] = unit_cms
    if objects and K == 2:
        scored = object_scores(np.concatenate(object_units)) if object_units else object_scores(np.zeros((0, 3)))
        out["objects"] = scored | {"class": class_names[1], "scenes_left_out": objects_left_out}
    if overlay_paths:
        out["overlays"] = overlay_paths
    return out


def _crop_box(scene: Scene, size: int) -> tuple[int, int, int, int]:
    """A window of at most ``size`` pixels around the first labelled object (else the centre)."""
    h, w = min(size, scene.height), min(size, scene.width)
    locs = scene.class_locations(1, np.random.default_rng(0)) if scene.has_labels else {}
    if locs:
        r, c = next(iter(locs.values()))[0]
    else:
        r, c = scene.height // 2, scene.width // 2
    r0 = int(np.clip(r - h // 2, 0, scene.height - h))
    c0 = int(np.clip(c - w // 2, 0, scene.width - w))
    return r0, c0, h, w


def save_confusion_png(cm: np.ndarray, class_names: list[str], target: Path) -> Path:
    """Row-normalised confusion matrix heat map with counts (matplotlib), written atomically.

    Args:
        cm: ``(K, K)`` confusion matrix.
        class_names: the K names.
        target: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(2 + 0.9 * k, 1.6 + 0.8 * k), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}\n{int(cm[i, j])}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return target


def evaluate_segmentation(cfg: EvaluateConfig, bundle: str | Path | Bundle, scenes: list[Scene]) -> dict[str, Any]:
    """Evaluate a bundle on labelled scenes; write ``metrics.json``, ``confusion_matrix.png`` and overlays.

    Args:
        cfg: output folder, inference options, overlays.
        bundle: path or loaded bundle.
        scenes: labelled scenes opened for this bundle (:func:`terraseg.infer.inputs.open_input`).

    Returns:
        The metrics dict (also in ``<out_dir>/metrics.json``).

    Raises:
        BundleError: unloadable bundle or band-count mismatch.
        InputFileError: bad data, or labels with fewer than two classes
            (:func:`terraseg.data.census.require_two_classes`).
        OutputError: the output folder cannot be written.
    """
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    out = Path(cfg.out_dir)
    predictor = predictor_for(b, cfg.inference)
    colors = [c.color for c in b.manifest.classes]
    from terraseg.data.holdout import block_side

    # the units of the interval: a validation split's own blocks (each scene), else the hold-out's block rule
    side = None if cfg.split == "val" else block_side(sum(s.height * s.width for s in scenes))
    metrics = evaluate_scenes(
        predictor,
        scenes,
        b.class_names,
        b.manifest.ignore_index,
        colors,
        out,
        cfg.overlays,
        cfg.overlay_size,
        unit_side=side,
        objects=True,
    )
    metrics.pop("unit_confusions")
    from terraseg.data.census import require_two_classes

    # a score of one class alone (a hold-out of buildings only scores 1.0 for a map of buildings everywhere)
    require_two_classes(np.array(metrics["confusion_matrix"]).sum(1), b.class_names, scenes, "score")
    metrics["bundle"] = str(bundle) if not isinstance(bundle, Bundle) else b.manifest.name
    metrics["task"] = "segmentation"
    from terraseg.infer.drift import bundle_drift

    reports = {s.name: r for s in scenes if (r := bundle_drift(b, s)) is not None}
    metrics["drift"] = {"scenes": len(reports), "flagged": {k: r.flagged for k, r in reports.items() if r.drifted}}
    save_confusion_png(np.array(metrics["confusion_matrix"]), b.class_names, out / "confusion_matrix.png")
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    if cfg.log_to_run:
        from terraseg.tracking import log_evaluation

        run = log_evaluation(b, metrics, [out / "metrics.json", out / "confusion_matrix.png"], cfg.tracking_uri, prefix=cfg.split)
        if run:
            metrics["mlflow_run_id"] = run
    return metrics


def bundle_config(bundle: Bundle, config: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """The experiment config behind a bundle's splits: ``config`` (a YAML) when given, else the one it was trained with.

    Args:
        bundle: the loaded bundle.
        config: a config YAML, or None.
        overrides: ``key.sub=value`` strings.

    Raises:
        BundleError: the bundle records no training config and none is given.
        ConfigError: an invalid config.
    """
    import json as _json

    from pydantic import ValidationError

    from terraseg.config import ExperimentConfig, apply_overrides, format_validation_error, load_config
    from terraseg.errors import BundleError, ConfigError

    if config is not None:
        return load_config(config, list(overrides))
    raw = (bundle.manifest.training or {}).get("config")
    if not raw:
        raise BundleError(f"{bundle.path}: the bundle records no training config; give the config YAML.")
    raw = apply_overrides(_json.loads(_json.dumps(raw)), list(overrides))
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, f"{bundle.path} (training config)")) from None


def split_scenes_of(
    bundle: Bundle,
    config: str | Path | None = None,
    split: str = "test",
    overrides: list[str] | tuple[str, ...] = (),
    warn: Any = None,
) -> list[Scene]:
    """The scenes of a bundle's split: the config's ``data.test`` sources, or the validation split the bundle recorded
    (rebuilt on the same training scenes, never drawn again).

    Args:
        bundle: the loaded bundle.
        config: a config YAML (default: the bundle's training config).
        split: ``"test"`` or ``"val"``.
        overrides: config overrides.
        warn: called with one sentence when an older bundle records no split (it is drawn again from the config).

    Raises:
        ConfigError: no test sources, no validation data, or another split name.
        BundleError: as :func:`bundle_config`, or scenes that differ from those the bundle was trained on.
    """
    from terraseg.data.holdout import apply_record
    from terraseg.data.sources import build_scenes, split_scenes
    from terraseg.errors import ConfigError

    if split not in ("test", "val"):
        raise ConfigError(f"split {split!r}: use 'test' or 'val'.")
    m = bundle.manifest
    cfg = bundle_config(bundle, config, overrides)
    where = config or bundle.path
    if split == "test":
        if not cfg.data.test:
            raise ConfigError(f"{where}: config has no `data.test` sources; use the 'val' split.")
        return build_scenes(cfg.data.test, cfg.data, m.ignore_index, len(m.classes))
    record = m.split or {}
    if record.get("units") is not None:
        train = build_scenes(cfg.data.train, cfg.data, m.ignore_index, len(m.classes))
        return apply_record(train, record).val
    if record.get("method") not in ("sources", "none") and warn is not None:
        warn(
            f"{bundle.path} records no validation split (an older bundle); the split is drawn again from the config and "
            f"may differ from the one training validated on."
        )
    val = split_scenes(cfg.data, m.ignore_index, len(m.classes), cfg.train.seed, bundle.class_names).val
    if not val:
        raise ConfigError(f"{where}: the config holds out no validation data (data.val empty and data.val_fraction 0).")
    return val
