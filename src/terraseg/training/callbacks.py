"""The Lightning callbacks of a training run: the progress bar or a line per epoch, throughput, and the wall budget."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L

from terraseg import progress

log = logging.getLogger(__name__)


def progress_bar() -> L.Callback:
    """Lightning's rich progress bar, reading the logged metrics at most twice a second, epochs counted from 1.

    Reading them converts device tensors to numbers, which makes the host wait for the GPU after
    every step; without that wait the training loop queues the next steps while the device computes.
    """
    from lightning.pytorch.callbacks import RichProgressBar

    class _Bar(RichProgressBar):
        _last, _skip = 0.0, False

        def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
            now = time.monotonic()
            self._skip = now - self._last < 0.5
            self._last = now if not self._skip else self._last
            try:
                super().on_train_batch_end(*args, **kwargs)
            finally:
                self._skip = False

        def _update_metrics(self, *args: Any, **kwargs: Any) -> None:
            if not self._skip:
                super()._update_metrics(*args, **kwargs)

        def _get_train_description(self, current_epoch: int) -> str:  # "Epoch 1/1", not Lightning's 0-based "Epoch 0/0"
            total = self.trainer.max_epochs
            text = f"Epoch {current_epoch + 1}" + (f"/{total}" if total is not None and total > 0 else "")
            return f"{text:{len(self.validation_description)}}" if len(self.validation_description) > len(text) else text

    return _Bar()


class EpochLines(L.Callback):
    """One line per epoch on standard output, flushed at once, where no progress bar is drawn (a file, a pipe, CI,
    a notebook): ``epoch 3/40: train/loss 0.3120, val/score 0.5521 (41 s)``."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t = time.monotonic()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.global_rank:
            return
        m = trainer.callback_metrics
        figures = ", ".join(f"{k} {float(m[k]):.4f}" for k in ("train/loss", "val/score", "val/loss") if k in m)
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        print(f"epoch {trainer.current_epoch + 1}{total}: {figures} ({time.monotonic() - self._t:.0f} s)", flush=True)


class Throughput(L.Callback):
    """Measures training windows per second (step time only, and wall time of the training epochs) and
    validation's share of the wall time."""

    def __init__(self) -> None:
        self.samples = 0
        self.seconds = 0.0
        self._t = 0.0
        self.wall = 0.0
        self.val_seconds = 0.0
        self._epoch = self._val = 0.0
        self.epochs: list[tuple[int, float]] = []  # per epoch: (training windows, wall seconds without validation)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch = time.perf_counter()
        self._epoch_samples, self._epoch_val = self.samples, self.val_seconds

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        dt = time.perf_counter() - self._epoch
        self.wall += dt
        self.epochs.append((self.samples - self._epoch_samples, dt - (self.val_seconds - self._epoch_val)))

    @property
    def steady_rate(self) -> float | None:
        """Wall windows/s without validation after the first epoch (worker start-up and kernel autotuning excluded)."""
        rest = self.epochs[1:]
        n, t = sum(e[0] for e in rest), sum(e[1] for e in rest)
        return n / t if rest and t > 0 else None

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        self.val_seconds += time.perf_counter() - self._val

    @property
    def validation_share(self) -> float:
        """Validation time / (training + validation time)."""
        train_only = max(self.wall - self.val_seconds, 0.0)  # Lightning runs validation inside the training epoch
        return self.val_seconds / max(train_only + self.val_seconds, 1e-9)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds += time.perf_counter() - self._t
        self.samples += int(batch["image"].shape[0]) * trainer.world_size  # DDP: every rank runs a batch of this size


class Budget(L.Callback):
    """Stops training early enough that the whole run, post-training steps included, ends within ``train.max_minutes``.

    The budget is wall time from the start of :func:`train_network` (hold-out, statistics, training,
    the validation Lightning runs when training stops, calibration, the tiling choice, ONNX export
    and the bundle). After every training batch and every validation, training stops when the time
    left is less than the reserve: the measured duration of one validation pass times the passes
    still to come (the last epoch's, calibration's, the tiling choice's) plus the ONNX export's measured time
    (:func:`terraseg.training.export_time.export_reserve`); the drift profile is fitted before the epochs. Before the first validation is
    measured, the reserve is a fifth of the budget (at least the export's).
    """

    def __init__(self, deadline: float, passes_after: int, throughput: Throughput, export_seconds: float = 0.0) -> None:
        self.deadline, self.passes_after, self.throughput = deadline, passes_after, throughput
        self.export_seconds = export_seconds
        self.start = time.monotonic()
        self.budget = deadline - self.start
        self.validations = 0
        self.stopped = False  # training was stopped by the budget

    def time_progress(self) -> float:
        """Share of the training time the budget allows that is used: the schedule anneals by it when the budget
        ends the run before the planned steps (:func:`terraseg.models.optim.build_scheduler`)."""
        now = time.monotonic()
        return (now - self.start) / max(self.deadline - self.reserve() - self.start, 1e-9)

    def pass_seconds(self) -> float | None:
        """Measured seconds of one validation pass (None before the first)."""
        return self.throughput.val_seconds / self.validations if self.validations else None

    def reserve(self) -> float:
        """Seconds kept for what follows the epochs: the validation passes after training and the ONNX export (a fifth of
        the budget before a validation pass was timed)."""
        v = self.pass_seconds()
        after = self.export_seconds
        return max(0.2 * self.budget, after) if v is None else v * (1 + self.passes_after) + after

    def _check(self, trainer: L.Trainer, reserve: float) -> None:
        if time.monotonic() + reserve >= self.deadline:
            trainer.should_stop = self.stopped = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._check(trainer, self.reserve())

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.validations += 1
            v = self.pass_seconds() or 0.0
            self._check(trainer, v * self.passes_after + self.export_seconds)  # no further validation


def after_training(name: str, deadline: float | None, seconds: float | None, skipped: list[str], keep: float = 0.0):
    """Whether a post-training step fits the budget, ``keep`` seconds (the ONNX export's) left after it (recorded in
    ``skipped`` when not), shown as progress when it runs.

    Args:
        name: the step, as the warning and ``skipped`` name it.
        deadline: ``time.monotonic()`` at which the budget ends, or None (no budget).
        seconds: the step's estimated seconds, or None (unknown: it runs).
        skipped: the run's list of steps left out, appended to.
        keep: seconds to leave after the step.

    Returns:
        A context to run the step in (a progress line when progress is shown), or None when it does not fit.
    """
    from contextlib import nullcontext

    if deadline is not None and seconds is not None and time.monotonic() + seconds + keep > deadline:
        skipped.append(name)
        log.warning(
            "%s skipped: it would overrun train.max_minutes (about %.0f s needed, %.0f s left)",
            name,
            seconds,
            max(deadline - time.monotonic(), 0),
        )
        return None
    return progress.task(f"after training: {name}") if progress.enabled() else nullcontext()
