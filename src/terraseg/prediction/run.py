"""``terraseg predict``: predict files with a bundle and write georeferenced outputs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from terraseg.bundle import Bundle
from terraseg.config.inference import PredictConfig
from terraseg.errors import ConfigError, TerrasegError
from terraseg.infer.drift import bundle_drift
from terraseg.infer.inputs import expand_inputs, open_input
from terraseg.infer.sliding import predictor_for
from terraseg.prediction.outputs import arrays_to_files, complete_outputs, predict_to_files

log = logging.getLogger(__name__)


@dataclass
class PredictResult:
    """Outputs per input file, and the inputs that failed with their one-line reason."""

    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    drift: dict[str, str] = field(default_factory=dict)  # input -> one-line warning (terraseg.infer.drift)
    skipped: int = 0  # inputs whose outputs were already complete (resume)
    table: str | None = None  # scene classification of image files: predictions.csv
    rows: int = 0  # its rows


def check_output_names(inputs: list[str] | list[tuple[str, str]]) -> None:
    """Refuse inputs whose outputs would share a name (``a/x.tif`` and ``b/x.tif`` both give ``x.tif``).

    Args:
        inputs: input paths (outputs are named after their stems), or ``(path, stem)`` pairs
            (:func:`terraseg.infer.inputs.expand_inputs`).

    Raises:
        ConfigError: two inputs map to one output name; nothing has been written yet.
    """
    seen: dict[str, str] = {}
    for item in inputs:
        p, key = item if isinstance(item, tuple) else (item, Path(item).stem)
        if key in seen and seen[key] != str(p):
            raise ConfigError(
                f"{seen[key]} and {p} would both write outputs named '{key}'; predict them into different --out folders."
            )
        seen[key] = str(p)


def predict_segmentation(cfg: PredictConfig, bundle: str | Path | Bundle) -> PredictResult:
    """Predict every input of ``cfg``; a bad input is reported and skipped, the others still run.

    Inputs are expanded first (:func:`terraseg.infer.inputs.expand_inputs`: folders, globs, lists,
    STAC). ``cfg.engine == 'ray'`` hands the work to :func:`terraseg.prediction.distributed.predict_on_ray`,
    which writes the same files.

    Args:
        cfg: inputs, output folder, inference options and extra outputs.
        bundle: bundle path or loaded bundle.

    Returns:
        :class:`PredictResult`.

    Raises:
        BundleError: the bundle cannot be loaded, or it classifies scenes.
        ConfigError: bad options, or inputs whose outputs would overwrite each other.
        InputFileError: a list, folder, glob or STAC file naming no image.
    """
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    if b.manifest.task != "segmentation":
        from terraseg.errors import BundleError

        raise BundleError(
            f"{b.path or b.manifest.name}: predict_segmentation writes segmentation maps; this bundle classifies "
            f"scenes: use terraseg.predict (or `terraseg predict`), which serves either task."
        )
    items = expand_inputs(cfg.inputs, cfg.asset)
    check_output_names(items)
    result = PredictResult()
    if cfg.resume:
        todo = []
        for path, stem in items:
            done = complete_outputs(Path(cfg.out_dir), stem, cfg.probabilities, cfg.overlay, cfg.uncertainty)
            if done is None:
                todo.append((path, stem))
            else:
                result.outputs[path], result.skipped = done, result.skipped + 1
        items = todo
    if cfg.engine == "ray":
        from terraseg.prediction.distributed import predict_on_ray

        return predict_on_ray(cfg, b, items, result)
    predictor = predictor_for(b, cfg.inference)
    colors = [c.color for c in b.manifest.classes]
    out: dict[str, Any] = dict(
        probabilities=cfg.probabilities, overlay=cfg.overlay, compress=cfg.compress, level=cfg.level, cog=cfg.cog
    )
    streamed = out | {"uncertainty": cfg.uncertainty}
    small: dict[tuple[int, int], list] = {}  # images that are one window, grouped by window size: batched
    for path, stem in items:
        try:
            scene = open_input(b, path, bands=cfg.bands, input_range=cfg.input_range)
            report = bundle_drift(b, scene)
            if report is not None and report.drifted:
                result.drift[str(path)] = report.message(str(path))
            size = predictor.single_window(scene)
            if size is not None and len(items) > 1 and not cfg.uncertainty:
                small.setdefault(size, []).append((path, stem, scene))
                continue
            result.outputs[str(path)] = predict_to_files(
                predictor, scene, Path(cfg.out_dir), b.class_names, colors, stem=stem, **streamed
            )
        except TerrasegError as e:
            result.failures[str(path)] = str(e)
    for group in small.values():
        for i in range(0, len(group), predictor.batch_size):
            chunk = group[i : i + predictor.batch_size]
            try:
                preds = predictor.predict_batch([s for _, _, s in chunk])
            except TerrasegError as e:  # an unreadable image in the batch: predict its members one by one
                preds = [None] * len(chunk)  # type: ignore[list-item]  # each member is then predicted alone
                log.debug("batch failed (%s); predicting one by one", e)
            for (path, stem, scene), pred in zip(chunk, preds):
                try:
                    ids, probs = pred if pred is not None else predictor.predict_array(scene)
                    result.outputs[str(path)] = arrays_to_files(scene, ids, probs, cfg, b.manifest.classes, stem)
                except TerrasegError as e:
                    result.failures[str(path)] = str(e)
    return result
