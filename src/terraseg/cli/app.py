"""The Typer app, its consoles and the one error boundary of the command line.

Every command module registers on :data:`app`; :func:`user_errors` turns a
:class:`terraseg.errors.TerrasegError` into one line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import functools
import logging
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console

from terraseg import __version__
from terraseg.config.inference import InferenceConfig, build_options
from terraseg.errors import TerrasegError

app = typer.Typer(
    name="terraseg", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Train, evaluate and predict segmentation models on satellite and aerial imagery.",
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def version_callback(value: bool) -> None:
    """Print the version and exit (``--version``)."""
    if value:
        print(f"terraseg {__version__}")
        raise typer.Exit()


def quiet_lightning() -> None:
    """Lightning sets its loggers to INFO on import; keep only warnings unless --verbose."""
    if logging.getLogger().level > logging.DEBUG:
        for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
            logging.getLogger(name).setLevel(logging.WARNING)


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so every ``with`` block (atomic outputs) cleans up as on Ctrl-C."""


def _terminate(signum: int, frame: Any) -> None:
    from terraseg import interrupt

    interrupt.request(signum)  # seen even where the exception below is swallowed (matplotlib finalisers)
    raise Terminated()


def _interrupt(signum: int, frame: Any) -> None:
    from terraseg import interrupt

    interrupt.request(signum)
    raise KeyboardInterrupt()


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn TerrasegError into one line on stderr and exit code 1; SIGTERM and Ctrl-C clean up alike."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminate)
            signal.signal(signal.SIGINT, _interrupt)
        try:
            return fn(*args, **kwargs)
        except TerrasegError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            from terraseg import interrupt

            if interrupt.requested() == signal.SIGTERM:  # a SIGTERM whose exception was swallowed, seen by interrupt.check()
                err.print("terminated; nothing half-written was left under a final name.")
                raise typer.Exit(143) from None
            err.print("interrupted; nothing half-written was left under a final name.")
            raise typer.Exit(130) from None
        except Terminated:
            err.print("terminated; nothing half-written was left under a final name.")
            raise typer.Exit(143) from None

    return wrapper


def build(cls, **kwargs: Any):
    """Validate command-line options into the typed config ``cls`` (None = default).

    Raises:
        ConfigError: one sentence naming each bad option.
    """
    return build_options(cls, "options", **kwargs)


# `--set key.sub=value`: every command that reads an experiment config takes it, as `train` does
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config field: key.sub=value (repeatable).")]

# options shared by every command that runs a bundle: help and defaults are the fields of
# terraseg.config.inference.InferenceConfig (declared once, there)
_FIELDS = InferenceConfig.model_fields
WindowOpt = Annotated[Optional[int], typer.Option(help=_FIELDS["window"].description)]
OverlapOpt = Annotated[float, typer.Option(help=_FIELDS["overlap"].description)]
BatchOpt = Annotated[Optional[int], typer.Option(help=_FIELDS["batch_size"].description)]
DeviceOpt = Annotated[str, typer.Option(help=_FIELDS["device"].description)]
PrecisionOpt = Annotated[str, typer.Option(help=_FIELDS["precision"].description)]
ChannelsLastOpt = Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last", help=_FIELDS["channels_last"].description)]
BackendOpt = Annotated[str, typer.Option(help=_FIELDS["backend"].description)]
OVERLAP, DEVICE, PRECISION, BACKEND = (_FIELDS[k].default for k in ("overlap", "device", "precision", "backend"))
