"""What every config model shares: strict validation, one-sentence errors, and numbers read as text."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from terraseg.errors import ConfigError


class Described(BaseModel):
    """A model whose fields are described by the docstring under each (pydantic's ``use_attribute_docstrings``),
    a description wrapped over several lines read as one line (the CLI's help, the schema, the reference)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        fields = [f for f in cls.model_fields.values() if f.description and "\n" in f.description]
        for f in fields:
            f.description = " ".join(f.description.split())  # type: ignore[union-attr]
        if fields:
            cls.model_rebuild(force=True)


class Strict(Described):
    """A config model: unknown fields are errors, and assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


M = TypeVar("M", bound=BaseModel)


def number_as_text(v: Any) -> Any:
    """YAML and ``--set`` read ``precision: 32`` as a number; the precision fields hold it as text.

    Args:
        v: the parsed value.
    """
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


def format_validation_error(err: ValidationError, source: str) -> str:
    """Turn a pydantic error into one sentence per problem, naming the field path and the file.

    Args:
        err: pydantic's error.
        source: the file or options validated (named first).
    """
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"] if not (isinstance(x, str) and x in ("scene", "folder")))
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown field '{loc}'")
        elif e["type"] == "missing":
            parts.append(f"missing required field '{loc}'")
        elif not loc and e["type"] == "value_error":  # a rule over several fields: its sentence says it all
            parts.append(str(e["msg"]).removeprefix("Value error, "))
        else:
            parts.append(f"field '{loc}': {e['msg']}")
    if all(not e["loc"] and e["type"] == "value_error" for e in err.errors()):
        return f"{source}: " + "; ".join(parts) + "."
    return f"{source}: invalid config: " + "; ".join(parts) + "."


def build_options(cls: type[M], source: str = "options", **kwargs: Any) -> M:
    """Validate keyword options into ``cls`` (None values fall back to the defaults).

    Args:
        cls: the config model.
        source: named in errors.
        kwargs: the options.

    Raises:
        ConfigError: one sentence naming each bad option.
    """
    try:
        return cls(**{k: v for k, v in kwargs.items() if v is not None})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None
