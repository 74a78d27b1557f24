"""A stop request that survives code which swallows exceptions (matplotlib finalisers, C extensions' callbacks).

The CLI's SIGTERM / SIGINT handlers raise in the main thread; an exception raised while a C extension
or a finaliser runs can be swallowed ("Exception ignored in ..."), so the handlers also set this flag,
and long commands call :func:`check` before they make their outputs final.
"""

from __future__ import annotations

_requested: int | None = None


def request(signum: int) -> None:
    """Record that the process was asked to stop by signal ``signum`` (called by the CLI's signal handlers)."""
    global _requested
    _requested = signum


def requested() -> int | None:
    """The signal number of the stop request, or None."""
    return _requested


def check() -> None:
    """Raise ``KeyboardInterrupt`` when a stop was requested, so that no output is made final after it.

    Raises:
        KeyboardInterrupt: a stop was requested.
    """
    if _requested is not None:
        raise KeyboardInterrupt("stop requested")
