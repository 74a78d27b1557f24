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
    multiclass_accuracy, multiclass_confusion_matrix, multiclass_f1_score, multiclass_precision, multiclass_recall,
)

from terraseg.bundle import Bundle
from terraseg.data.classes import ClassItem
from terraseg.errors import TerrasegError
from terraseg.evaluate.report import save_confusion_png
from terraseg.io.atomic import atomic_path, write_text_atomic
from terraseg.infer.classify import ImageClassifier


def classification_metrics(probs: np.ndarray, labels: np.ndarray, class_names: list[str], top_k: int = 2) -> dict[str, Any]:
    """Metrics of ``(N, K)`` probabilities against ``(N,)`` true class ids.

    Args:
        probs: ``(N, K)`` class probabilities. labels: ``(N,)`` true class ids. class_names: the K names.
            top_k: k of the top-k accuracy.

    Returns:
        ``accuracy`` (micro), ``f1_macro``, ``top{k}_accuracy``, ``per_class`` {name: precision,
        recall, f1, support}, ``confusion_matrix`` (rows true, columns predicted), ``n``.
    """
    k = len(class_names)
    p, y = torch.from_numpy(np.asarray(probs, np.float32)), torch.from_numpy(np.asarray(labels, np.int64))
    kk = min(top_k, k)
    per = {n: {"precision": float(pr), "recall": float(rc), "f1": float(f), "support": int(s)} for n, pr, rc, f, s in zip(
        class_names, multiclass_precision(p, y, k, average=None), multiclass_recall(p, y, k, average=None),
        multiclass_f1_score(p, y, k, average=None), np.bincount(labels, minlength=k))}
    return {
        "n": int(len(y)),
        "accuracy": float(multiclass_accuracy(p, y, k, average="micro")),
        "f1_macro": float(multiclass_f1_score(p, y, k, average="macro")),
        f"top{kk}_accuracy": float(multiclass_accuracy(p, y, k, average="micro", top_k=kk)),
        "per_class": per,
        "confusion_matrix": multiclass_confusion_matrix(p, y, k).tolist(),
    }


def evaluate_classifier(bundle: str | Path | Bundle, items: list[ClassItem], out_dir: str | Path, batch_size: int = 32,
                        top_k: int = 2) -> dict[str, Any]:
    """Evaluate a classification bundle on labelled images.

    Writes ``metrics.json``, ``confusion_matrix.png`` and ``predictions.csv`` (file, true, predicted,
    probability) under ``out_dir``.

    Args:
        bundle: a classification bundle (path or loaded). items: labelled images. out_dir: output folder.
            batch_size: images per forward pass. top_k: k of the top-k accuracy.

    Raises:
        BundleError: not a classification bundle, or an image with another band count. InputFileError: unreadable image.
    """
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    clf = ImageClassifier(b, batch_size)
    names = b.class_names
    probs = []
    for _, p in clf.classify_paths([it.path for it in items]):
        if isinstance(p, TerrasegError):
            raise p
        probs.append(p)
    pr = np.stack(probs)
    y = np.array([it.label for it in items])
    m = classification_metrics(pr, y, names, top_k)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_confusion_png(np.array(m["confusion_matrix"]), names, out / "confusion_matrix.png")
    with atomic_path(out / "predictions.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "true", "predicted", "probability"])
        for it, p in zip(items, pr):
            w.writerow([it.path, names[it.label], names[int(p.argmax())], round(float(p.max()), 6)])
    m["bundle"] = b.manifest.name
    write_text_atomic(out / "metrics.json", json.dumps(m, indent=2))
    return m
