"""What every trainer returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict


class RunOptions(TypedDict, total=False):
    """How a training run starts (every key optional), as :func:`terraseg.training.run.train` takes them.

    Attributes:
        resume: networks: continue from ``<run_dir>/checkpoints/last.ckpt`` (after an interruption).
        tracking_uri: MLflow URI overriding the config (e.g. a tracking server).
        callbacks: extra Lightning callbacks (networks; e.g. the tuner's pruning callback).
        parent_run_id: make the MLflow run a child of this run (a tuning study's trials).
        scenes: segmentation: ``(train, validation)`` scenes instead of the config's sources (cross-validation folds).
        started: ``time.monotonic()`` when the run began (the CLI passes its own start, so that ``train.max_minutes``
            covers library imports too); default: now.
    """

    resume: bool
    tracking_uri: str | None
    callbacks: list | None
    parent_run_id: str | None
    scenes: tuple[list, list] | None
    started: float | None


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        bundle_path: the written bundle.
        run_dir: the run folder.
        best: the kept network's validation figures (``val/score`` and friends; empty without validation): the best
            epoch's, or the last epoch's when ``train.keep`` chose it (``kept`` says so).
        epochs: epochs run (1 for pixel baselines).
        train_seconds: wall time of training.
        chips_per_second: training windows per second (networks) or training pixels per second of the fit (pixel
            baselines).
        tracking_uri: MLflow URI, or None when tracking is off.
        validation_share: networks: validation's share of the training wall time.
        rank: global DDP rank of the process that returned this (0 wrote the bundle; others wrote nothing).
        history: networks: one dict of figures per validated epoch (as in the bundle's ``metrics.history``).
        split: the hold-out's record (:attr:`terraseg.data.holdout.Split.record`: units held out, labelled pixels per
            class on each side, warnings), or None when the caller gave the scenes.
        wall_seconds: wall time of the whole run (what ``train.max_minutes`` bounds), or None.
        budget_skipped: post-training steps left out so as not to overrun ``train.max_minutes``.
        stop_reason: networks: why training stopped (the wall budget, early stopping, or the planned epochs), in words.
        memory: networks: the main process's peak RSS (``peak_rss_mb``) and its decoded-scene cache and spill store
            figures (:meth:`terraseg.io.cache.ByteLRU.report`, :meth:`terraseg.io.cache.SpillStore.report`).
        kept: networks: which epoch's network the bundle holds and why (:func:`terraseg.training.network.keep_epoch`),
            or None when it is simply the best by validation.
        kept_epoch: ``"best"`` or ``"last"``.
        candidates: with ``train.challengers``: one line per candidate (its validation score and interval) and the
            choice (:mod:`terraseg.training.candidates`).
        arch: the kept candidate's ``model.arch`` when it is not the config's.
    """

    bundle_path: Path
    run_dir: Path
    best: dict[str, Any]
    epochs: int
    train_seconds: float
    chips_per_second: float
    tracking_uri: str | None
    validation_share: float | None = None
    rank: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    split: dict[str, Any] | None = None
    wall_seconds: float | None = None
    budget_skipped: list[str] = field(default_factory=list)
    memory: dict[str, Any] | None = None
    stop_reason: str | None = None
    kept: str | None = None
    kept_epoch: str = "best"
    candidates: list[str] = field(default_factory=list)
    arch: str | None = None
