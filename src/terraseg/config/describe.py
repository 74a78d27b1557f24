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
            out.append(
                f"{indent}{name}: {_scalar(value.model_dump(mode='json') if isinstance(value, BaseModel) else _json(value))}"
            )
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


# units named in a field's description, in the words the descriptions use; shown in the reference's Units column
_UNITS = [
    (r"\b(?:in|many) pixels\b|\(pixels\)", "pixels"),
    (r"\bmetres\b|\bin m\b", "metres"),
    (r"\bminutes\b", "minutes"),
    (r"\bseconds\b", "seconds"),
    (r"\bms\b|milliseconds", "ms"),
    (r"\bMB\b|\bMiB\b", "MB"),
    (r"\bGB\b|\bGiB\b", "GB"),
    (r"\bin bytes\b", "bytes"),
    (r"\bCRS units\b", "CRS units"),
    (r"\bin degrees\b", "degrees"),
]


def _type_name(annotation: Any) -> str:
    """A field's type as a reader writes it in YAML: ``int``, ``list[str]``, ``'unet' | 'fpn'``, ``ModelConfig``."""
    import re
    import types
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a!r}`" if not isinstance(a, str) else f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is not None:
        inner = ", ".join(_type_name(a).strip("`") for a in args)
        return f"`{getattr(origin, '__name__', str(origin))}[{inner}]`"
    if annotation is type(None):
        return "`null`"
    name = getattr(annotation, "__name__", None) or re.sub(r"typing\.", "", str(annotation))
    return f"`{name}`"


def _default_text(info: Any) -> str:
    from pydantic_core import PydanticUndefined

    if info.default_factory is not None:
        try:
            value = info.default_factory()
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(see below)"
        return f"`{_scalar(_dump(value))}`"
    if info.default is PydanticUndefined:
        return "**required**"
    return f"`{_scalar(_dump(info.default))}`"


def _dump(value: Any) -> Any:
    """A default as plain JSON values (models and lists of models included)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    return _json(value)


def _units(description: str) -> str:
    import re

    found = [unit for pattern, unit in _UNITS if re.search(pattern, description)]
    return ", ".join(dict.fromkeys(found)) or ""


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _nested_models(a)]


def _model_tables(model: type[BaseModel], prefix: str, seen: set[type], out: list[str]) -> None:
    if model in seen:
        return
    seen.add(model)
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    out += [
        f"### `{prefix}`" if prefix else f"### `{model.__name__}`",
        "",
        doc,
        "",
        "| field | type | default | units | description |",
        "|---|---|---|---|---|",
    ]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, info in model.model_fields.items():
        desc = (info.description or "").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")
        out.append(f"| `{name}` | {_type_name(info.annotation)} | {_default_text(info)} | {_units(desc)} | {desc} |")
        nested += [(f"{prefix}.{name}" if prefix else name, m) for m in _nested_models(info.annotation)]
    out.append("")
    for path, sub in nested:
        _model_tables(sub, path, seen, out)


def reference_markdown() -> str:
    """The configuration reference page (``docs/reference/config.md``): every field of every typed config.

    One table per config model, reached from :class:`terraseg.config.ExperimentConfig` (what a YAML config
    holds) and from the command configs the CLI builds (predict, evaluate, export, serve and the data commands),
    each field with its type, default, the units its description names, and the description itself.
    ``make site`` writes it; a test checks the committed page against this function.

    Returns:
        Markdown text.
    """
    from terraseg.config import ExperimentConfig, inference, prep

    out = [
        "# Configuration reference",
        "",
        "Every field of terraseg's typed configs (pydantic models), generated from the models themselves by "
        "`terraseg.config.describe.reference_markdown` (`make site` writes this page; a test keeps it current). "
        "A YAML experiment config holds the fields of `ExperimentConfig`; `terraseg config show CONFIG.yaml` "
        "prints one with every default filled in, and `configs/schema.json` lets an editor complete and check it. "
        "The command configs are what the CLI's options build (`terraseg predict --help` and so on).",
        "",
        "Units are those a field's description names; a field without units is a count, a ratio, a name or a flag.",
        "",
        "## Experiment config (YAML)",
        "",
    ]
    seen: set[type] = set()
    _model_tables(ExperimentConfig, "", seen, out)
    out += ["## Command configs", ""]
    for model in (
        inference.PredictConfig,
        inference.EvaluateConfig,
        inference.ExportConfig,
        inference.ServeConfig,
        prep.ChipConfig,
        prep.MosaicConfig,
        prep.RasterizeConfig,
        prep.SplitConfig,
        prep.StatsConfig,
        prep.VectorizeConfig,
    ):
        _model_tables(model, "", seen, out)
    return "\n".join(out).rstrip() + "\n"
