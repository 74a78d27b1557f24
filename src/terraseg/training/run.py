"""``terraseg train``: one function from a validated config to a model bundle.

The config decides the trainer: networks (segmentation and scene classification) train with
Lightning (:mod:`terraseg.training.network`), scikit-learn pixel baselines fit on sampled pixels
(:mod:`terraseg.training.pixel`). Both validate through the real predictor, track through
:class:`terraseg.tracking.Tracker` and return a :class:`terraseg.training.result.TrainResult`.
"""

from __future__ import annotations

from terraseg.config import ExperimentConfig
from terraseg.training.result import TrainResult


def train(
    cfg: ExperimentConfig,
    resume: bool = False,
    tracking_uri: str | None = None,
    callbacks: list | None = None,
    parent_run_id: str | None = None,
    scenes: tuple[list, list] | None = None,
    started: float | None = None,
) -> TrainResult:
    """Train the model a config describes and write ``<run_dir>/model.terraseg``.

    Args:
        cfg: validated experiment config.
        resume: networks: continue from ``<run_dir>/checkpoints/last.ckpt`` (after an interruption).
        tracking_uri: MLflow URI overriding the config (e.g. a tracking server).
        callbacks: extra Lightning callbacks (networks; e.g. the tuner's pruning callback).
        parent_run_id: make the MLflow run a child of this run (a tuning study's trials).
        scenes: segmentation: ``(train, validation)`` scenes instead of the config's sources
            (cross-validation folds, :mod:`terraseg.training.cv`).
        started: ``time.monotonic()`` when the run began (the CLI passes its own start, so that
            ``train.max_minutes`` covers library imports too); default: now.

    Returns:
        :class:`TrainResult`.

    Raises:
        InputFileError: bad data.
        ConfigError: bad settings.
        OutputError: an unwritable run folder.
    """
    if cfg.train.challengers:
        if scenes is None and not callbacks and not cfg.pixel_model:
            from terraseg.training.candidates import train_with_challengers

            return train_with_challengers(cfg, resume, tracking_uri, callbacks, parent_run_id, started)
        import logging

        logging.getLogger(__name__).warning(
            "train.challengers %s not fitted: %s",
            ", ".join(cfg.train.challengers),
            f"model.arch {cfg.model.arch} is itself a pixel baseline"
            if cfg.pixel_model
            else "cross-validation folds and tuning trials train the configured network alone",
        )
    if cfg.pixel_model:
        from terraseg.training.pixel import train_pixel

        return train_pixel(cfg, tracking_uri, parent_run_id=parent_run_id, scenes=scenes)
    from terraseg.training.network import train_network

    return train_network(
        cfg, resume, tracking_uri, callbacks=callbacks, parent_run_id=parent_run_id, scenes=scenes, started=started
    )


__all__ = ["TrainResult", "train"]
