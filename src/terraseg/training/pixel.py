"""Training the classical pixel baselines: sample labelled pixels, fit, validate, explain, bundle.

Pixels are drawn class-balanced from the training scenes in one streamed pass: every labelled pixel
gets a uniform random key and each class keeps the ``samples_per_class`` smallest keys, which is a
uniform sample without replacement whatever the scene size, in bounded memory. Validation runs the
fitted model through the core's sliding-window predictor (``predictor_for`` on the new bundle), as
evaluation and prediction do.
Feature importance is permutation importance (Breiman 2001; scikit-learn's
``permutation_importance``) on held-out pixels: the drop in accuracy when a feature is shuffled.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from terraseg.bundle import Bundle, BundleManifest, InputSpec
from terraseg.config import ExperimentConfig
from terraseg.data.datasets import scene_statistics
from terraseg.data.holdout import Split
from terraseg.data.scenes import Scene
from terraseg.data.sources import split_scenes
from terraseg.data.windows import grid_windows
from terraseg.errors import InputFileError
from terraseg.evaluation.metrics import interval_logs, validation_metrics
from terraseg.evaluation.report import evaluate_scenes
from terraseg.infer.sliding import predictor_for
from terraseg.io.atomic import atomic_path, output_folder, write_text_atomic
from terraseg.models.pixel import PixelFeatures, PixelModel, make_estimator
from terraseg.tracking import Tracker, flatten_params
from terraseg.training.result import TrainResult
from terraseg.version import __version__

log = logging.getLogger(__name__)
PREDICT_WINDOW = 1024


def sample_pixels(
    scenes: list[Scene], features: PixelFeatures, num_classes: int, per_class: int, seed: int, block: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced features ``X`` (n, F) float32 and labels ``y`` (n,) int64 from labelled scenes.

    Scenes are read in ``block`` windows (plus the texture margin), so memory is bounded by one
    block's features and ``per_class x F`` values per class.

    Args:
        scenes: labelled scenes.
        features: the per-pixel feature stack.
        num_classes: class count.
        per_class: pixels sampled at most per class.
        seed: sampling seed.
        block: read window side in pixels.
    """
    rng = np.random.default_rng(seed)
    m = features.margin
    keys = [np.empty(0, np.float64) for _ in range(num_classes)]
    rows = [np.empty((0, len(features.names)), np.float32) for _ in range(num_classes)]
    for s in scenes:
        for r0, c0, h, w in grid_windows(s.height, s.width, block, edge="clip"):
            r = s.read(r0 - m, c0 - m, h + 2 * m, w + 2 * m)
            if r.mask is None:
                continue
            f = features.compute(r.image)[:, m : m + h, m : m + w]
            mask, valid = r.mask[m : m + h, m : m + w], r.valid[m : m + h, m : m + w]
            for c in range(num_classes):
                idx = np.flatnonzero((mask == c) & valid)
                if idx.size == 0:
                    continue
                k = rng.random(idx.size)
                if idx.size > per_class:  # only the smallest keys can survive
                    keep = np.argpartition(k, per_class)[:per_class]
                    idx, k = idx[keep], k[keep]
                keys[c] = np.concatenate([keys[c], k])
                rows[c] = np.concatenate([rows[c], f.reshape(f.shape[0], -1)[:, idx].T])
                if keys[c].size > per_class:
                    keep = np.argpartition(keys[c], per_class)[:per_class]
                    keys[c], rows[c] = keys[c][keep], rows[c][keep]
    X = np.concatenate(rows)
    y = np.concatenate([np.full(len(r), c, np.int64) for c, r in enumerate(rows)])
    return X, y


def feature_importance(model: PixelModel, X: np.ndarray, y: np.ndarray, names: list[str], seed: int) -> list[dict[str, Any]]:
    """Permutation importance (mean accuracy drop, std over 5 repeats), plus impurity importance for forests.

    Args:
        model: the fitted pixel model.
        X: ``(n, F)`` held-out features.
        y: ``(n,)`` their class ids.
        names: the F feature names.
        seed: permutation seed.
    """
    from joblib import parallel_config
    from sklearn.inspection import permutation_importance

    with parallel_config(backend="sequential"):  # small samples: the forest's threads would cost more than they save
        r = permutation_importance(model.estimator, X, y, n_repeats=5, random_state=seed, n_jobs=1)
    mdi = getattr(model.estimator, "feature_importances_", None)
    rows = [
        {
            "feature": n,
            "permutation_mean": round(float(a), 6),
            "permutation_std": round(float(b), 6),
            **({"impurity": round(float(mdi[i]), 6)} if mdi is not None else {}),
        }
        for i, (n, a, b) in enumerate(zip(names, r.importances_mean, r.importances_std))
    ]
    return sorted(rows, key=lambda d: -d["permutation_mean"])


def save_importance(rows: list[dict[str, Any]], out_dir: Path, title: str) -> tuple[Path, Path]:
    """``feature_importance.csv`` and a horizontal bar plot ``feature_importance.png`` (written atomically).

    Args:
        rows: :func:`feature_importance` output.
        out_dir: the run folder.
        title: the plot's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, png = out_dir / "feature_importance.csv", out_dir / "feature_importance.png"
    with atomic_path(table) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    shown = rows[:25][::-1]
    fig, ax = plt.subplots(figsize=(6, 1 + 0.28 * len(shown)), dpi=110)
    ax.barh(
        [r["feature"] for r in shown],
        [r["permutation_mean"] for r in shown],
        xerr=[r["permutation_std"] for r in shown],
        color="#4c72b0",
    )
    ax.set_xlabel("accuracy drop when shuffled (permutation importance)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return table, png


def _bands(cfg: ExperimentConfig, scenes: list[Scene]) -> tuple[int, list[str] | None]:
    """The band count every scene must share, and the band names (config, else the first raster's descriptions)."""
    bands = scenes[0].count
    for s in scenes:
        if s.count != bands:
            raise InputFileError(
                f"{getattr(s, 'path', s.name)}: image has {s.count} bands, the first training image has {bands}."
            )
    band_names = cfg.data.band_names or scenes[0].band_descriptions()
    if band_names and len(band_names) != bands:
        raise InputFileError(f"data.band_names names {len(band_names)} bands but the images have {bands}.")
    return bands, band_names


def _validate(
    cfg: ExperimentConfig, bundle: Bundle, model: PixelModel, val_scenes: list[Scene], train_xy: tuple, run_dir: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Validation figures (the predictor over the validation scenes) and permutation feature importance."""
    bc, seed = cfg.baseline, cfg.train.seed
    best: dict[str, Any] = {}
    if val_scenes:
        names = [c.name for c in cfg.classes]
        m = evaluate_scenes(predictor_for(bundle), val_scenes, names, cfg.ignore_index)
        best = validation_metrics(np.asarray(m["confusion_matrix"]), names) | interval_logs(m["unit_confusions"])
        Xv, yv = sample_pixels(val_scenes, model.features, cfg.num_classes, min(bc.samples_per_class, 2000), seed + 1)
    else:
        Xv, yv = train_xy
    importance = feature_importance(model, Xv, yv, model.features.names, seed) if len(np.unique(yv)) > 1 else []
    if importance:
        save_importance(importance, run_dir, f"{cfg.name}: {cfg.model.arch}")
    return best, importance


def train_pixel(
    cfg: ExperimentConfig,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    scenes: tuple[list, list] | None = None,
):
    """Fit a pixel baseline from a segmentation config and write ``<run_dir>/model.terraseg``.

    Args:
        cfg: the config.
        tracking_uri: MLflow.
        parent_run_id: MLflow.
        scenes: ``(train, validation)`` scenes instead of the config's (cross-validation folds,
            :mod:`terraseg.training.cv`).

    Returns:
        :class:`TrainResult` (``chips_per_second`` is training pixels per second).

    Raises:
        InputFileError: no labelled pixels.
        ConfigError: an index needing a band the input lacks.
    """
    run_dir = cfg.run_dir()
    output_folder(run_dir)
    bc, seed = cfg.baseline, cfg.train.seed
    split = (
        Split(*scenes)
        if scenes
        else split_scenes(cfg.data, cfg.ignore_index, cfg.num_classes, seed, [c.name for c in cfg.classes])
    )
    train_scenes, val_scenes = split.train, split.val
    bands, band_names = _bands(cfg, train_scenes + val_scenes)
    features = PixelFeatures(bands, band_names, bc.indices, bc.texture_window)
    stats = scene_statistics(train_scenes, "none", cfg.data.normalization.percentiles, 200_000, seed)

    t0 = time.perf_counter()
    X, y = sample_pixels(train_scenes, features, cfg.num_classes, bc.samples_per_class, seed)
    if len(np.unique(y)) < 2:
        raise InputFileError("the training scenes hold labelled pixels of fewer than two classes.")
    t_sample = time.perf_counter() - t0
    est = make_estimator(cfg.model, bc, seed)
    t1 = time.perf_counter()
    est.fit(X, y)
    t_fit = time.perf_counter() - t1
    model = PixelModel(est, features, cfg.num_classes)

    manifest = BundleManifest(
        name=cfg.name,
        task="segmentation",
        model=cfg.model,
        classes=cfg.classes,
        ignore_index=cfg.ignore_index,
        input=InputSpec(
            bands=bands,
            band_indexes=getattr(train_scenes[0], "bands", None),
            source_bands=getattr(getattr(train_scenes[0], "info", None), "count", None),
            band_names=band_names,
            dtype=train_scenes[0].dtype,
            nodata=train_scenes[0].nodata,
            normalization=stats,
            train_window=PREDICT_WINDOW,
            predict_window=PREDICT_WINDOW,
        ),
        baseline={**bc.model_dump(mode="json"), "feature_names": features.names},
        split=split.record,
        training={
            "config": cfg.model_dump(mode="json"),
            "terraseg_version": __version__,
            "train_seconds": round(t_sample + t_fit, 2),
            "sample_seconds": round(t_sample, 2),
            "fit_seconds": round(t_fit, 2),
            "samples": int(len(y)),
            "samples_per_class": np.bincount(y, minlength=cfg.num_classes).tolist(),
        },
    )
    from terraseg.infer.drift import fit_drift

    manifest.drift = fit_drift(
        train_scenes,
        val_scenes,
        scene_statistics(train_scenes, "meanstd", cfg.data.normalization.percentiles, 200_000, seed),
        PREDICT_WINDOW,
        seed,
    )
    bundle = Bundle(manifest, model)

    t2 = time.perf_counter()
    best, importance = _validate(cfg, bundle, model, val_scenes, (X, y), run_dir)
    manifest.training["validation_seconds"] = round(time.perf_counter() - t2, 2)  # a challenger's comparison costs about this
    manifest.metrics = {"validation": best, "feature_importance": importance}
    tracker = Tracker(cfg, run_dir, tracking_uri, parent_run_id) if cfg.tracking.enabled else None
    manifest.training["mlflow_run_id"] = tracker.run_id if tracker else None
    bundle_path = bundle.save(run_dir / "model.terraseg")
    write_text_atomic(run_dir / "stats.json", json.dumps(stats.to_dict(), indent=2))
    uri = None
    if tracker is not None:
        tracker.log_params(flatten_params(cfg.model_dump(mode="json")))
        tracker.log_metrics(best)
        tracker.log_artifacts(bundle_path, run_dir / "feature_importance.png", run_dir / "feature_importance.csv")
        tracker.finish()
        uri = tracker.uri
    return TrainResult(
        bundle_path,
        run_dir,
        {k: v for k, v in best.items() if k != "per_class"},
        1,
        t_sample + t_fit,
        len(y) / max(t_fit, 1e-9),
        uri,
        split=split.record,
    )
