"""Configs a user can write without reading the source: the JSON Schema, and a resolved config with every field described.

* :func:`json_schema`: the JSON Schema (draft 2020-12, pydantic's ``model_json_schema``) of
  :class:`terraseg.config.ExperimentConfig`. Shipped configs start with
  ``# yaml-language-server: $schema=schema.json``, so editors with the YAML language server
  (VS Code's YAML extension, Neovim, JetBrains) complete and check every field.
* :func:`describe`: a validated config written back as YAML, defaults filled in, each field preceded
  by its description as a comment: what ``terraseg config show`` prints.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import BaseModel

SCHEMA_LINE = "# yaml-language-server: $schema=schema.json"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of an experiment config (every field with its description, type, default and bounds)."""
    from terraseg.config import ExperimentConfig

    schema = ExperimentConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "terraseg experiment config"
    return schema


def schema_text() -> str:
    """:func:`json_schema` as the text of ``configs/schema.json`` (sorted keys, two-space indent, final newline)."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text[:-4].strip() if text.endswith("\n...") else text.removesuffix("...").strip()


def _comment(text: str | None, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in (text or "").splitlines() if line.strip()]


def _lines(model: BaseModel, indent: str) -> list[str]:
    out: list[str] = []
    fields = type(model).model_fields
    for name, info in fields.items():
        value = getattr(model, name)
        out += _comment(info.description, indent)
        if isinstance(value, BaseModel):
            out.append(f"{indent}{name}:")
            out += _lines(value, indent + "  ")
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            out.append(f"{indent}{name}:")
            for item in value:
                sub = _lines(item, indent + "    ")
                first = next(i for i, line in enumerate(sub) if not line.lstrip().startswith("#"))
                sub[first] = f"{indent}  - " + sub[first].lstrip()
                out += sub
        elif isinstance(value, dict) and value and any(isinstance(v, BaseModel) for v in value.values()):
            out.append(f"{indent}{name}:")
            for k, v in value.items():
                out.append(f"{indent}  {_scalar(k)}:")
                out += _lines(v, indent + "    ")
        else:
            out.append(f"{indent}{name}: {_scalar(value.model_dump(mode='json') if isinstance(value, BaseModel) else _json(value))}")
    return out


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def describe(model: BaseModel) -> str:
    """A validated config as YAML with defaults filled in and each field's description above it as a comment.

    The text parses back (``yaml.safe_load``) to the same config.

    Args:
        model: a validated pydantic config (e.g. :class:`terraseg.config.ExperimentConfig`).

    Returns:
        YAML text.
    """
    return "\n".join([SCHEMA_LINE, *_lines(model, "")]) + "\n"
