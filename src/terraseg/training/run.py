"""``terraseg train``: one function from a validated config to a model bundle.

The config decides the trainer: networks (segmentation and scene classification) train with
Lightning (:mod:`terraseg.training.network`), scikit-learn pixel baselines fit on sampled pixels
(:mod:`terraseg.training.pixel`). Both validate through the real predictor, track through
:class:`terraseg.tracking.Tracker` and return a :class:`terraseg.training.result.TrainResult`.
"""

from __future__ import annotations

from typing import Unpack

from terraseg.config import ExperimentConfig
from terraseg.training.result import RunOptions, TrainResult


def train(cfg: ExperimentConfig, **run: Unpack[RunOptions]) -> TrainResult:
    """Train the model a config describes and write ``<run_dir>/model.terraseg``.

    Args:
        cfg: validated experiment config.
        **run: how the run starts: ``resume``, ``tracking_uri``, ``callbacks``, ``parent_run_id``, ``scenes``,
            ``started`` (:class:`terraseg.training.result.RunOptions`).

    Returns:
        :class:`TrainResult`.

    Raises:
        InputFileError: bad data.
        ConfigError: bad settings.
        OutputError: an unwritable run folder.
    """
    if cfg.train.challengers:
        if run.get("scenes") is None and not run.get("callbacks") and not cfg.pixel_model:
            from terraseg.training.candidates import train_with_challengers

            return train_with_challengers(cfg, **run)
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

        return train_pixel(cfg, run.get("tracking_uri"), parent_run_id=run.get("parent_run_id"), scenes=run.get("scenes"))
    from terraseg.training.network import train_network

    return train_network(cfg, **run)


__all__ = ["TrainResult", "train"]
