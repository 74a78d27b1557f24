"""One seam per task: everything segmentation and scene classification each do differently, at every door.

A task (:class:`Task`) checks the options (each honoured or refused in one line,
:mod:`terraseg.tasks.options`), resolves its inputs, predicts to outputs, selects and scores
evaluation data, prints its report, builds the inference object a server runs, and tells training
and the planner what they need (:attr:`Task.dense`). The CLI, the Python API (:mod:`terraseg.api`),
the planner, training and the server (FastAPI and Ray Serve) ask :func:`task_for` /
:func:`task_named` instead of comparing task names (``tests/test_contracts.py`` checks it), so a
bundle is run the same way whichever door it comes in by. ``tasks/`` imports nothing from
``training/``, ``plan/``, ``serve/``, ``api`` or ``cli/``: it stands below them.

A third task is one module here with a class implementing :class:`Task`, one line in
:data:`TASKS`, and its rows in :mod:`terraseg.tasks.options` (``docs/architecture.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from terraseg.bundle import Bundle
from terraseg.config.inference import EvaluateConfig, InferenceConfig, PredictConfig

log = logging.getLogger(__name__)


class Task(Protocol):
    """What a task implements (:class:`~terraseg.tasks.segmentation.SegmentationTask`,
    :class:`~terraseg.tasks.classification.ClassificationTask`)."""

    name: str
    noun: str
    dense: bool  # a class per pixel of scenes read window by window (else one class per image)
    endpoint: str  # the REST route that answers an upload: 'segment' or 'classify'

    def check_predict(self, cfg: PredictConfig) -> None:
        """Refuse a predict option the task does not apply, in one line (ConfigError)."""

    def predict(self, cfg: PredictConfig, bundle: Bundle) -> Any:
        """Predict ``cfg.inputs`` into ``cfg.out_dir``; a :class:`terraseg.prediction.run.PredictResult`."""

    def check_evaluate(self, cfg: EvaluateConfig) -> None:
        """Refuse an evaluate option the task does not apply, in one line (ConfigError)."""

    def evaluation_data(self, cfg: EvaluateConfig, bundle: Bundle, say: Callable[[str], None]) -> list[Any]:
        """The labelled data ``cfg`` names (scenes or images)."""

    def evaluate(
        self, cfg: EvaluateConfig, bundle: Bundle, say: Callable[[str], None], data: list[Any] | None = None
    ) -> dict[str, Any]:
        """Score the bundle on ``data`` (default: :meth:`evaluation_data`); the metrics, also written to ``cfg.out_dir``."""

    def report(self, bundle: Bundle, metrics: dict[str, Any], what: str, split: str, out: Any, err: Any) -> None:
        """Print :meth:`evaluate`'s metrics: a per-class table and the headline to ``out``, warnings to ``err``.

        Args:
            bundle: the bundle scored.
            metrics: :meth:`evaluate`'s metrics.
            what: the data, as the report's title names it.
            split: 'test' or 'val' (named in the width warning).
            out: a rich console for the report.
            err: a rich console for warnings.
        """

    def inference(self, bundle: Bundle, options: InferenceConfig, backend: Any = None) -> Any:
        """The object that runs the network on raw inputs (``backend``, ``batch_size``, ``window``, ``device``); with
        ``backend``, that backend instead of the bundle's own network (a Ray Serve deployment)."""

    def input_size(self, bundle: Bundle) -> int:
        """The side in pixels of the network's input for one forward pass (a window, or the resized image)."""

    def windows(self, inference: Any, height: int, width: int) -> int:
        """Forward-pass inputs (windows) one ``height x width`` image costs (the server's time budget)."""


TASKS = {
    "segmentation": "terraseg.tasks.segmentation:SegmentationTask",
    "classification": "terraseg.tasks.classification:ClassificationTask",
}  # task name -> its class


def task_named(name: str) -> Task:
    """The task called ``name`` (a config's or a fingerprint's ``task``).

    Args:
        name: a key of :data:`TASKS`.

    Raises:
        BundleError: a task this version does not know.
    """
    import importlib

    from terraseg.errors import BundleError

    if name not in TASKS:
        raise BundleError(f"task '{name}' is not one this terraseg runs ({', '.join(TASKS)}); upgrade terraseg.")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def task_for(bundle: Bundle) -> Task:
    """The task a bundle was trained for.

    Args:
        bundle: the loaded bundle (``manifest.task``).

    Raises:
        BundleError: a task this version does not know, naming the bundle.
    """
    from terraseg.errors import BundleError

    try:
        return task_named(bundle.manifest.task)
    except BundleError as e:
        raise BundleError(f"{bundle.path or bundle.manifest.name}: {e}") from None


def _load(bundle: str | Path | Bundle) -> Bundle:
    return bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)


def run_predict(cfg: PredictConfig, bundle: str | Path | Bundle) -> Any:
    """``terraseg predict`` for either task: options checked for the bundle's task, then its predictions written.

    Args:
        cfg: the predict config.
        bundle: a bundle or its path.

    Returns:
        :class:`terraseg.prediction.run.PredictResult`.

    Raises:
        ConfigError: an option the bundle's task does not apply (one line), or bad options.
        BundleError: as the task's predict.
        InputFileError: as the task's predict.
    """
    b = _load(bundle)
    task = task_for(b)
    task.check_predict(cfg)
    return task.predict(cfg, b)


def run_evaluate(
    cfg: EvaluateConfig, bundle: str | Path | Bundle, say: Callable[[str], None] | None = None, data: list[Any] | None = None
) -> dict[str, Any]:
    """``terraseg evaluate`` for either task: options checked, data selected, scored, written to ``cfg.out_dir``.

    Args:
        cfg: the evaluate config.
        bundle: a bundle or its path.
        say: called with each warning or note line (default: logged as warnings).
        data: labelled scenes or images already opened, instead of those ``cfg`` names.

    Returns:
        The metrics dict (``task``: 'segmentation' or 'classification').

    Raises:
        ConfigError: an option the bundle's task does not apply, or no such split; otherwise as the task's evaluate.
    """
    b = _load(bundle)
    task = task_for(b)
    task.check_evaluate(cfg)
    return task.evaluate(cfg, b, say or log.warning, data)


__all__ = ["TASKS", "Task", "run_evaluate", "run_predict", "task_for", "task_named"]
