"""``terraseg compare``: two segmentation bundles scored on the same labelled units, and their paired difference.

Both bundles predict the same scenes with ``evaluate``'s defaults; each unit (a spatial block of the hold-out's
block rule, or a whole image) gives one confusion matrix per bundle, and the difference of their scores gets a
paired bootstrap interval (:func:`terraseg.evaluation.bootstrap.paired_difference`): the same units are drawn for
both, so what is hard for both cancels. An interval that excludes 0 separates the two; one that holds 0 does not.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from terraseg.bundle import Bundle
from terraseg.config.inference import InferenceConfig
from terraseg.data.scenes import Scene
from terraseg.errors import BundleError


def check_comparable(a: Bundle, b: Bundle) -> None:
    """Refuse, in one line, two bundles that cannot be compared: a scene-classification bundle, other classes or bands.

    Args:
        a: the loaded bundles.
        b: the loaded bundles.

    Raises:
        BundleError: naming the bundle and what differs.
    """
    for x in (a, b):
        if x.manifest.task != "segmentation":
            raise BundleError(f"{x.path}: compare scores segmentation bundles; this one classifies scenes (use evaluate).")
    if a.class_names != b.class_names or a.manifest.input.bands != b.manifest.input.bands:
        raise BundleError(
            f"{a.path} and {b.path}: compare needs the same classes and band count "
            f"({a.class_names} / {a.manifest.input.bands} bands vs {b.class_names} / {b.manifest.input.bands})."
        )


def compare_bundles(
    a: Bundle, b: Bundle, scenes: list[Scene], inference: InferenceConfig | None = None, validation: bool = False
) -> dict[str, Any]:
    """Score bundles ``a`` and ``b`` on ``scenes`` and give the paired difference ``a - b`` with its 95% interval.

    Args:
        a: loaded segmentation bundles with the same classes.
        b: loaded segmentation bundles with the same classes.
        scenes: labelled scenes (opened for ``a``; both bundles take the same bands).
        inference: prediction options for both (default: ``evaluate``'s).
        validation: the scenes are a recorded validation split: each is one unit (a held-out block), as in training.

    Returns:
        ``{"a": {...}, "b": {...}, "difference": {...}, "units", "unit", "score"}``: each side's score, its
        interval and pixels; the difference of the headline score (positive-class IoU for binary tasks, else
        mIoU over the classes present) with its paired interval and whether it separates the two.

    Raises:
        BundleError: a classification bundle, or bundles with other classes or band counts.
    """
    from terraseg.data.census import require_two_classes
    from terraseg.data.holdout import block_side
    from terraseg.evaluation.bootstrap import paired_difference
    from terraseg.evaluation.metrics import score
    from terraseg.evaluation.report import evaluate_scenes
    from terraseg.infer.sliding import predictor_for

    check_comparable(a, b)
    side = None if validation else block_side(sum(s.height * s.width for s in scenes))
    sides: dict[str, Any] = {}
    units: dict[str, np.ndarray] = {}
    for key, bundle in (("a", a), ("b", b)):
        m = evaluate_scenes(
            predictor_for(bundle, inference), scenes, bundle.class_names, bundle.manifest.ignore_index, unit_side=side
        )
        units[key] = m.pop("unit_confusions")
        if key == "a":
            require_two_classes(np.asarray(m["confusion_matrix"]).sum(1), a.class_names, scenes, "score")
        sides[key] = {"bundle": str(bundle.path), "score": score(m), "interval": m["intervals"]["score"], "pixels": m["pixels"]}
    diff = paired_difference(units["a"], units["b"], "score")
    binary = len(a.class_names) == 2
    return {
        "a": sides["a"],
        "b": sides["b"],
        "difference": diff,
        "units": diff["units"],
        "unit": f"blocks of {side} px" if side else "held-out blocks",
        "score": f"IoU of '{a.class_names[1]}'" if binary else "mIoU over the classes present",
    }


__all__ = ["check_comparable", "compare_bundles"]
