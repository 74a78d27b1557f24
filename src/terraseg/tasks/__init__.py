"""One seam per task: what segmentation and scene classification each do for ``predict`` and ``evaluate``.

A task (:class:`Task`) checks the options (each honoured or refused in one line,
:mod:`terraseg.tasks.options`), resolves its inputs, predicts to outputs, and selects and scores
evaluation data. The CLI, the Python API below and the server all go through :func:`task_for`, so a
bundle is run the same way whichever door it comes in by.

Python API, the same as the commands::

    from terraseg.tasks import evaluate, predict
    predict("runs/x/model.terraseg", ["scenes/"], "out", probabilities=True)
    evaluate("runs/x/model.terraseg", split="val")   # the exact validation split the bundle records
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Protocol

from terraseg.bundle import Bundle
from terraseg.config.inference import EvaluateConfig, PredictConfig, with_inference

log = logging.getLogger(__name__)


class Task(Protocol):
    """What a task implements (:class:`~terraseg.tasks.segmentation.SegmentationTask`,
    :class:`~terraseg.tasks.classification.ClassificationTask`)."""

    name: str
    noun: str

    def check_predict(self, cfg: PredictConfig) -> None:
        """Refuse a predict option the task does not apply, in one line (ConfigError)."""

    def predict(self, cfg: PredictConfig, bundle: Bundle) -> Any:
        """Predict ``cfg.inputs`` into ``cfg.out_dir``; a :class:`terraseg.predict.run.PredictResult`."""

    def check_evaluate(self, cfg: EvaluateConfig) -> None:
        """Refuse an evaluate option the task does not apply, in one line (ConfigError)."""

    def evaluation_data(self, cfg: EvaluateConfig, bundle: Bundle, say: Callable[[str], None]) -> list[Any]:
        """The labelled data ``cfg`` names (scenes or images)."""

    def evaluate(self, cfg: EvaluateConfig, bundle: Bundle, say: Callable[[str], None]) -> dict[str, Any]:
        """Score the bundle on :meth:`evaluation_data`; the metrics, also written to ``cfg.out_dir``."""


def task_for(bundle: Bundle) -> Task:
    """The task a bundle was trained for.

    Args:
        bundle: the loaded bundle (``manifest.task``).

    Raises:
        BundleError: a task this version does not know.
    """
    from terraseg.errors import BundleError

    task = bundle.manifest.task
    if task == "segmentation":
        from terraseg.tasks.segmentation import SegmentationTask

        return SegmentationTask()
    if task == "classification":
        from terraseg.tasks.classification import ClassificationTask

        return ClassificationTask()
    raise BundleError(f"{bundle.path or bundle.manifest.name}: task '{task}' is not one this terraseg runs "
                      "(segmentation, classification); upgrade terraseg.")


def _load(bundle: str | Path | Bundle) -> Bundle:
    return bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)


def run_predict(cfg: PredictConfig, bundle: str | Path | Bundle) -> Any:
    """``terraseg predict`` for either task: options checked for the bundle's task, then its predictions written.

    Args:
        cfg: the predict config. bundle: a bundle or its path.

    Returns:
        :class:`terraseg.predict.run.PredictResult`.

    Raises:
        ConfigError: an option the bundle's task does not apply (one line), or bad options. BundleError, InputFileError:
            as the task's predict.
    """
    b = _load(bundle)
    task = task_for(b)
    task.check_predict(cfg)
    return task.predict(cfg, b)


def predict(bundle: str | Path | Bundle, inputs: list[str | Path], out_dir: str | Path, **options: Any) -> Any:
    """Python API of ``terraseg predict``, for either task: builds the same :class:`PredictConfig` as the command.

    Args:
        bundle: bundle path or loaded bundle. inputs: files, folders, globs, lists, STAC JSON. out_dir: output folder.
        **options: fields of :class:`PredictConfig` (``probabilities``, ``overlay``, ``grid``, ``resume``, ``engine``...)
            and of :class:`terraseg.config.inference.InferenceConfig` (``window``, ``tta``, ``backend``...).

    Raises:
        ConfigError: an unknown or invalid option, or one the bundle's task does not apply.
    """
    cfg = with_inference(PredictConfig, inputs=[str(p) for p in inputs], out_dir=str(out_dir), **options)
    return run_predict(cfg, bundle)


def run_evaluate(cfg: EvaluateConfig, bundle: str | Path | Bundle, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``terraseg evaluate`` for either task: options checked, data selected, scored, written to ``cfg.out_dir``.

    Args:
        cfg: the evaluate config. bundle: a bundle or its path. say: called with each warning or note line
            (default: logged as warnings).

    Returns:
        The metrics dict (``task``: 'segmentation' or 'classification').

    Raises:
        ConfigError: an option the bundle's task does not apply, or no such split; otherwise as the task's evaluate.
    """
    b = _load(bundle)
    task = task_for(b)
    task.check_evaluate(cfg)
    return task.evaluate(cfg, b, say or log.warning)


def evaluate(bundle: str | Path | Bundle, data: str | Path | None = None, out_dir: str | Path | None = None,
             split: str = "test", **options: Any) -> dict[str, Any]:
    """Python API of ``terraseg evaluate``, for either task: ``evaluate(bundle, split="val")`` scores the exact
    validation split the bundle records, as ``terraseg evaluate BUNDLE --split val`` does.

    Args:
        bundle: bundle path or loaded bundle. data: an image (with ``labels=``), an image/mask or class folder, or a
            config YAML; None: the bundle's training config. out_dir: output folder (default ``<bundle folder>/<split>``).
        split: with a config (or none), 'test' or 'val'.
        **options: the other fields of :class:`EvaluateConfig` (``labels``, ``overlays``, ``overrides``...) and of
            :class:`terraseg.config.inference.InferenceConfig`.

    Raises:
        ConfigError: an unknown or invalid option, or one the bundle's task does not apply.
    """
    b = _load(bundle)
    out = out_dir or (Path(b.path).parent if b.path else Path(".")) / split
    cfg = with_inference(EvaluateConfig, out_dir=str(out), data=str(data) if data else None, split=split, **options)
    return run_evaluate(cfg, b)


__all__ = ["Task", "evaluate", "predict", "run_evaluate", "run_predict", "task_for"]
