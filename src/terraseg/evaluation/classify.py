"""Classification metrics (torchmetrics): accuracy, macro-F1, top-k accuracy, per-class precision,
recall and F1, confusion matrix (PNG and counts), and the per-image predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from terraseg.bundle import Bundle
from terraseg.data.classes import ClassItem
from terraseg.errors import TerrasegError
from terraseg.evaluation.report import save_confusion_png
from terraseg.infer.classify import ImageClassifier
from terraseg.io.atomic import atomic_path, write_text_atomic


def classification_metrics(probs: np.ndarray, labels: np.ndarray, class_names: list[str], top_k: int = 2) -> dict[str, Any]:
    """Metrics of ``(N, K)`` probabilities against ``(N,)`` true class ids.

    Args:
        probs: ``(N, K)`` class probabilities.
        labels: ``(N,)`` true class ids.
        class_names: the K names.
        top_k: k of the top-k accuracy.

    Returns:
        ``accuracy`` (micro), ``f1_macro``, ``top{k}_accuracy``, ``per_class`` {name: precision,
        recall, f1, support}, ``confusion_matrix`` (rows true, columns predicted), ``n``.
    """
    k = len(class_names)
    p, y = torch.from_numpy(np.asarray(probs, np.float32)), torch.from_numpy(np.asarray(labels, np.int64))
    kk = min(top_k, k)
    per = {
        n: {"precision": float(pr), "recall": float(rc), "f1": float(f), "support": int(s)}
        for n, pr, rc, f, s in zip(
            class_names,
            multiclass_precision(p, y, k, average=None),
            multiclass_recall(p, y, k, average=None),
            multiclass_f1_score(p, y, k, average=None),
            np.bincount(labels, minlength=k),
        )
    }
    return {
        "n": int(len(y)),
        "accuracy": float(multiclass_accuracy(p, y, k, average="micro")),
        "f1_macro": float(multiclass_f1_score(p, y, k, average="macro")),
        f"top{kk}_accuracy": float(multiclass_accuracy(p, y, k, average="micro", top_k=kk)),
        "per_class": per,
        "confusion_matrix": multiclass_confusion_matrix(p, y, k).tolist(),
    }


def image_intervals(probs: np.ndarray, labels: np.ndarray, k: int, seed: int = 0) -> dict[str, Any]:
    """95% bootstrap intervals of accuracy and macro-F1, the images being the resampled units (the draws and level every
    interval of terraseg uses: :data:`terraseg.evaluation.bootstrap.DRAWS`, :data:`~terraseg.evaluation.bootstrap.LEVEL`).

    Images of one scene or one acquisition are not independent, so these intervals are lower bounds of the
    uncertainty when the test images come in groups (Efron and Tibshirani, "An Introduction to the Bootstrap",
    1993, percentile intervals).

    Args:
        probs: ``(N, K)`` probabilities.
        labels: ``(N,)`` true ids.
        k: class count.
        seed: the replicates' seed.

    Returns:
        ``{"accuracy": [low, high] | None, "f1_macro": [low, high] | None, "units": N, "unit": "images"}``.
    """
    from terraseg.evaluation.bootstrap import DRAWS, LEVEL, _interval, resample_weights

    n = len(labels)
    if n < 2:
        return {"accuracy": None, "f1_macro": None, "units": n, "unit": "images"}
    w = resample_weights(n, DRAWS, seed).astype(np.float64)  # (B, N)
    pred = probs.argmax(1)
    acc = (w @ (pred == labels)) / w.sum(1)
    tp = np.stack([w @ ((pred == c) & (labels == c)) for c in range(k)], 1)
    fp = np.stack([w @ ((pred == c) & (labels != c)) for c in range(k)], 1)
    fn = np.stack([w @ ((pred != c) & (labels == c)) for c in range(k)], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0).mean(1)
    return {"accuracy": _interval(acc, LEVEL), "f1_macro": _interval(f1, LEVEL), "units": n, "unit": "images"}


def evaluate_classifier(
    bundle: str | Path | Bundle,
    items: list[ClassItem],
    out_dir: str | Path,
    batch_size: int = 32,
    top_k: int = 2,
    options: Any = None,
    log_to_run: bool = False,
    tracking_uri: str | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Evaluate a classification bundle on labelled images.

    Writes ``metrics.json`` (with 95% intervals over images, :func:`image_intervals`), ``confusion_matrix.png``
    and ``predictions.csv`` (file, true, predicted, probability) under ``out_dir``.

    Args:
        bundle: a classification bundle (path or loaded).
        items: labelled images.
        out_dir: output folder.
        batch_size: images per forward pass.
        top_k: k of the top-k accuracy.
        options: :class:`terraseg.config.inference.InferenceConfig` (device, backend, precision, tta...), or None.
        log_to_run: log the figures to the MLflow run that trained the bundle
            (:func:`terraseg.tracking.log_evaluation`).
        tracking_uri: its store.
        split: the metric prefix ('test' or 'val').

    Raises:
        BundleError: not a classification bundle, or an image with another band count.
        InputFileError: unreadable image.
    """
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    clf = ImageClassifier(b, batch_size, options=options)
    names = b.class_names
    probs = []
    for _, p in clf.classify_paths([it.path for it in items]):
        if isinstance(p, TerrasegError):
            raise p
        probs.append(p)
    pr = np.stack(probs)
    y = np.array([it.label for it in items])
    m = classification_metrics(pr, y, names, top_k)
    m["intervals"] = image_intervals(pr, y, len(names))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_confusion_png(np.array(m["confusion_matrix"]), names, out / "confusion_matrix.png")
    with atomic_path(out / "predictions.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "true", "predicted", "probability"])
        for it, p in zip(items, pr):
            w.writerow([it.path, names[it.label], names[int(p.argmax())], round(float(p.max()), 6)])
    m["bundle"], m["task"] = b.manifest.name, "classification"
    write_text_atomic(out / "metrics.json", json.dumps(m, indent=2))
    if log_to_run:
        from terraseg.tracking import log_evaluation

        run = log_evaluation(b, m, [out / "metrics.json", out / "confusion_matrix.png"], tracking_uri, prefix=split)
        if run:
            m["mlflow_run_id"] = run
    return m
