"""The Typer app, its consoles and the one error boundary of the command line.

Every command module registers on :data:`app`; :func:`user_errors` turns a
:class:`terraseg.errors.TerrasegError` into one line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from terraseg.config.inference import build_options
from terraseg.errors import TerrasegError
from terraseg.version import __version__

app = typer.Typer(
    name="terraseg",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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


def with_signature(command: Callable[..., Any], params: list) -> Callable[..., Any]:
    """Give a wrapper the parameters Typer should read (``inspect.Parameter`` list), not its wrapped function's.

    Args:
        command: a ``functools.wraps`` wrapper taking keyword arguments.
        params: its command-line parameters.
    """
    import inspect

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    del command.__wrapped__  # type: ignore[attr-defined]  # typer reads __signature__, not the wrapped function's
    return command


def options_from(
    model: type[BaseModel], skip: tuple[str, ...] = (), nested: tuple[str, ...] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: a command whose options are the fields of the config model ``model``, declared once there.

    Each field becomes ``--field-name`` with the field's type (Literal choices, Optional, bool as
    ``--x/--no-x``; a list of strings or numbers as one comma-separated value, ``'1,2,3'``, the CLI's
    convention), its default, and its description as the help. The command receives first a builder,
    ``make(**fields) -> model``, which validates the generated options together with the ``fields`` it is
    given (the model fields the command declares itself, as its own parameters or in ``skip``: positional
    inputs, nested settings...), then its own parameters. The fields of a nested model named in ``nested``
    (``inference``: window, overlap, device...) are options too, under their own names (prefixed with the
    parent's where a top-level field has the name; a parameter of the command with the name stands for it, and
    the command passes it to ``make`` as ``parent={"name": value}``).

    Args:
        model: the pydantic config model.
        skip: more fields the command passes to ``make`` itself, or leaves out (``parent.field`` for a nested one).
        nested: fields holding a config model whose fields become options.

    Raises:
        ConfigError: at run time, one sentence per bad option (:func:`build`).
    """
    import inspect

    from pydantic_core import PydanticUndefined

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        own = list(inspect.signature(fn, eval_str=True).parameters.values())[1:]
        # the flags of the command's own options (inside Annotated, typer keeps the first in `default`)
        flags = {
            d.split("/")[0]
            for p in own
            for info in getattr(p.annotation, "__metadata__", ())
            for d in (getattr(info, "default", None), *(getattr(info, "param_decls", None) or ()))
            if isinstance(d, str) and d.startswith("--")
        }
        own_names = {p.name for p in own}
        mine = set(skip) | own_names | {n for n in model.model_fields if "--" + n.replace("_", "-") in flags}
        entries: list[tuple[tuple[str, ...], Any, str]] = []  # (where in the model, field, option name)
        for name, f in model.model_fields.items():
            if name in mine:  # the command declares it (same name, or an option with the same flag)
                continue
            if name not in nested:
                entries.append(((name,), f, name))
                continue
            for sub, sf in f.annotation.model_fields.items():  # type: ignore[union-attr]  # the command's own parameter stands for it
                if f"{name}.{sub}" not in skip and sub not in own_names:
                    entries.append(((name, sub), sf, f"{name}_{sub}" if sub in model.model_fields else sub))
        fields, lists = [], {}
        for _, f, name in entries:
            flag = "--" + name.replace("_", "-")
            decls = (f"{flag}/--no-{flag[2:]}",) if f.annotation is bool else ()
            # a required field is a required option; a default factory's value is the model's business
            default = inspect.Parameter.empty if f.is_required() else None if f.default is PydanticUndefined else f.default
            annotation, help_ = f.annotation, escape(f.description or "")  # `[low, high]` is text, not rich markup
            if (item := _list_item(f.annotation)) is not None:  # comma-separated on the command line
                lists[name] = item
                annotation, help_ = Optional[str], f"{help_} Comma-separated."
                default = ",".join(str(v) for v in default) if default else None  # type: ignore[union-attr]
            fields.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=default,
                    annotation=Annotated[annotation, typer.Option(*decls, help=help_)],
                )
            )
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if p.default is inspect.Parameter.empty]
        params += fields + [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if p.default is not inspect.Parameter.empty
        ]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            given: dict[str, Any] = {}
            for where, _, name in entries:
                value = kwargs.pop(name)
                if value is not None and name in lists:
                    value = _split(value, lists[name], "--" + name.replace("_", "-"))
                if len(where) == 1:
                    given[where[0]] = value
                elif value is not None:  # a nested model's unset option: its default
                    given.setdefault(where[0], {})[where[1]] = value

            def make(**fields: Any) -> Any:  # a nested mapping the command passes joins the generated one
                return build(
                    model,
                    **(
                        given
                        | {
                            k: (given[k] | v if isinstance(v, dict) and isinstance(given.get(k), dict) else v)
                            for k, v in fields.items()
                        }
                    ),
                )

            return fn(make, **kwargs)

        return with_signature(command, params)

    return decorate


def _list_item(annotation: Any) -> type | None:
    """``str``, ``int`` or ``float`` when ``annotation`` is a list or a tuple of them (optionally ``| None``), else None."""
    import types
    import typing

    args = (
        [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else [annotation]
    )
    if len(args) == 1 and typing.get_origin(args[0]) in (list, tuple):
        items = set(typing.get_args(args[0])) - {Ellipsis} or {str}
        return items.pop() if len(items) == 1 and items <= {str, int, float} else None
    return None


def _split(text: str, item: type, option: str) -> list:
    """``'a,b,c'`` -> a list of ``item`` values.

    Raises:
        ConfigError: a value that is not an ``item``.
    """
    from terraseg.errors import ConfigError

    try:
        return [item(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} '{text}': expected comma-separated {item.__name__} values.") from None


def command_from(
    model: type[BaseModel], skip: tuple[str, ...] = (), name: str | None = None, nested: tuple[str, ...] = ()
) -> Callable[[Callable[..., Any]], Any]:
    """Register a command of :data:`app` whose options come from ``model`` (:func:`options_from`), errors in one line.

    Args:
        model: the pydantic config model.
        skip: fields the command declares itself or leaves out.
        name: the command's name (default: the function's).
        nested: fields whose config model's fields become options.
    """

    def decorate(fn: Callable[..., Any]) -> Any:
        return app.command(name)(user_errors(options_from(model, skip, nested)(fn)))

    return decorate


# `--set key.sub=value`: every command that reads an experiment config takes it, as `train` does
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config field: key.sub=value (repeatable).")]
