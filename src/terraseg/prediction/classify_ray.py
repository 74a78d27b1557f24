"""``terraseg predict --engine ray`` for scene-classification bundles: the same outputs, computed by Ray actors.

Each actor loads the bundle once (:class:`ClassifyWorker`). Image files go out in chunks and come back
as rows, which the driver writes into one ``predictions.csv``; ``--grid`` scenes go out one at a time
and each actor writes that scene's files (atomically, as the local engine does). A unit whose actor
died or raised an I/O error is retried up to ``ray.max_retries`` times. Cluster set-up (address,
workers, CPUs and GPUs per worker, forwarded environment) is :mod:`terraseg.prediction.distributed`'s.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from terraseg.bundle import Bundle
from terraseg.config.inference import PredictConfig
from terraseg.errors import TerrasegError
from terraseg.prediction.distributed import bundle_bytes, connect, dispatch, forwarded_env, worker_layout

log = logging.getLogger(__name__)
CHUNK = 64  # images per unit: large enough to fill a batch, small enough to spread over the actors


class ClassifyWorker:
    """A Ray actor's state: the bundle, loaded once, and its classifier.

    Args:
        bundle_bytes: the ``.terraseg`` file's bytes.
        cfg: the predict config as a dict.
        threads: torch CPU threads.
    """

    def __init__(self, bundle_bytes: bytes, cfg: dict[str, Any], threads: int) -> None:
        import torch

        from terraseg.infer.classify import ImageClassifier

        torch.set_num_threads(max(1, threads))
        self.bundle = Bundle.from_bytes(bundle_bytes)
        self.cfg = PredictConfig.model_validate(cfg)
        self.clf = ImageClassifier(self.bundle, options=self.cfg.inference)

    def files(self, paths: list[str]) -> list[tuple[str, Any]]:
        """``(path, row dict)`` per classified image, ``(path, one-line reason)`` per bad one.

        Args:
            paths: image files.
        """
        from terraseg.prediction.class_outputs import table_row

        out: list[tuple[str, Any]] = []
        for p, pr in self.clf.classify_paths(paths, bands=self.cfg.bands, input_range=self.cfg.input_range):
            out.append(
                (p, str(pr) if isinstance(pr, TerrasegError) else table_row(p, pr, self.bundle.class_names, self.cfg.uncertainty))
            )
        return out

    def scene(self, path: str, stem: str) -> tuple[str, Any]:
        """Classify one scene on its grid and write its files: ``("ok", outputs)`` or ``("failed", reason)``.

        Args:
            path: the scene.
            stem: its output name.
        """
        from terraseg.prediction.class_outputs import classify_scene_to_files

        try:
            return "ok", classify_scene_to_files(self.clf, self.bundle, path, stem, self.cfg)
        except TerrasegError as e:
            return "failed", str(e)


def classify_on_ray(cfg: PredictConfig, bundle: Bundle, items: list[tuple[str, str]], result: Any) -> Any:
    """Classify ``items`` on Ray: rows of image files (returned), or grid scenes (written; outputs in ``result``).

    Args:
        cfg: the predict config (``cfg.grid``, ``cfg.ray``).
        bundle: the classification bundle.
        items: ``(path, stem)`` to do.
        result: a :class:`terraseg.prediction.run.PredictResult` (failures, outputs).

    Returns:
        With ``cfg.grid``: ``result``; else the table rows of the classified images, in no particular order.

    Raises:
        ConfigError: Ray missing or unreachable, or no actor could be started.
    """
    import ray

    if not items:
        return result if cfg.grid else []
    started = connect(cfg.ray.address)
    try:
        workers, cpus, gpus = worker_layout(cfg)
        data = bundle_bytes(bundle)
        actor_cls = ray.remote(ClassifyWorker).options(
            num_cpus=cpus, num_gpus=gpus, max_restarts=cfg.ray.max_retries, runtime_env={"env_vars": forwarded_env()}
        )
        units: list[Any] = (
            list(items) if cfg.grid else [[p for p, _ in items[i : i + CHUNK]] for i in range(0, len(items), CHUNK)]
        )
        ref = ray.put(data)
        actors = [actor_cls.remote(ref, cfg.model_dump(mode="json"), cpus) for _ in range(min(workers, len(units)))]
        values = _drive(actors, units, cfg, result)
        for a in actors:
            ray.kill(a)  # type: ignore[arg-type]
    finally:
        if started:
            ray.shutdown()
    if cfg.grid:
        for (path, _), (status, value) in values:
            if status == "ok":
                result.outputs[path] = value
            else:
                result.failures[path] = value
        return result
    rows = []
    for _, got in values:
        for p, v in got:
            if isinstance(v, str):
                result.failures[p] = v
            else:
                rows.append(v)
    return rows


def _drive(actors: list, units: list[Any], cfg: PredictConfig, result: Any) -> list[tuple[Any, Any]]:
    """Run the units on the actors (:func:`terraseg.prediction.distributed.dispatch`); ``[(unit, value)]`` of those done."""
    done: list[tuple[Any, Any]] = []
    submit = (lambda a, u: a.scene.remote(*u)) if cfg.grid else (lambda a, u: a.files.remote(u))
    for u, value, reason, attempts in dispatch(actors, deque(units), submit, cfg.ray.max_retries):
        if reason is None:
            done.append((u, value))
            continue
        for p in [u[0]] if cfg.grid else u:
            result.failures[p] = f"{p}: failed after {attempts} attempts on Ray ({reason})."
    return done


__all__ = ["ClassifyWorker", "classify_on_ray"]
