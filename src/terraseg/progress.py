"""One progress display for every long command (rich), shown only where someone watches.

Library code reports progress through :func:`task`; nothing is drawn unless the CLI switched it on
(:func:`enable`: standard error is a terminal and ``--quiet`` was not given), so the Python API, tests,
logs and pipes stay clean. Tasks opened while another is shown join the same display (rich allows one
live display at a time). ``advance`` is thread-safe (the predictor's writer thread reports rows).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

_enabled = False
_lines = False
_lock = threading.Lock()
_active: dict = {"progress": None, "users": 0}


def _nothing(amount: float = 1) -> None:
    """``advance`` where nothing is drawn."""


def enable(on: bool = True) -> None:
    """Show progress (the CLI calls this when standard error is a terminal and ``--quiet`` is not set)."""
    global _enabled
    _enabled = on


def show_lines(on: bool = True) -> None:
    """Print a line per finished step (a training epoch) where no bar is drawn: the CLI's output to a file or pipe."""
    global _lines
    _lines = on


def lines() -> bool:
    """Whether per-step lines are printed (:func:`show_lines`)."""
    return _lines


def enabled() -> bool:
    """Whether progress is shown."""
    return _enabled


@contextmanager
def task(description: str, total: float | None = None, unit: str = "") -> Iterator[Callable[[float], None]]:
    """A progress bar for one piece of work; yields ``advance(amount=1)``.

    Args:
        description: what is being done, e.g. ``"predict scene.tif"``.
        total: units of work (None: unknown, a spinner and a count).
        unit: name of the unit shown after the count (``"rows"``, ``"MB"``...).

    Yields:
        ``advance(amount)``: record finished work (a no-op when progress is off).
    """
    if not _enabled:
        yield _nothing
        return
    from rich.console import Console
    from rich.errors import LiveError
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with _lock:
        if _active["progress"] is None:
            bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(unit),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            try:
                bar.start()
                _active["progress"] = bar
            except LiveError:  # another live display (Lightning's training bar) owns the terminal: stay silent
                _active["progress"] = None
        if _active["progress"] is None:
            progress = None
        else:
            _active["users"] += 1
            progress = _active["progress"]
    if progress is None:
        yield _nothing
        return
    tid = progress.add_task(description, total=total)
    try:
        yield partial(progress.advance, tid)
    finally:
        progress.remove_task(tid)
        with _lock:
            _active["users"] -= 1
            if _active["users"] == 0:
                progress.stop()
                _active["progress"] = None


__all__ = ["enable", "enabled", "lines", "show_lines", "task"]
