"""Configs a user can write without reading the source: the schema, `config show`, and the editor line."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from terraseg.cli.main import app
from terraseg.config import ExperimentConfig, load_config
from terraseg.config.describe import describe, schema_text

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_committed_schema_is_the_models_schema():
    assert (ROOT / "configs" / "schema.json").read_text() == schema_text(), (
        "run: terraseg config schema --out configs/schema.json"
    )


def test_schema_describes_every_field():
    schema = json.loads(schema_text())
    data = schema["$defs"]["DataConfig"]["properties"]
    assert "val_fraction" in data and data["val_fraction"]["description"]
    assert data["val_fraction"]["exclusiveMaximum"] == 1.0 and data["val_fraction"]["minimum"] == 0.0
    missing = [
        f"{name}.{p}"
        for name, d in schema["$defs"].items()
        for p, v in d.get("properties", {}).items()
        if p != "kind" and not v.get("description")
    ]
    assert not missing, missing


def test_shipped_configs_carry_the_schema_line_and_validate():
    for cfg in sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "pipelines").glob("*.yaml")):
        first = cfg.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), cfg
        assert (cfg.parent / first.split("=", 1)[1]).resolve() == (ROOT / "configs" / "schema.json"), cfg


def test_show_prints_resolved_config_with_descriptions_that_parses_back():
    res = runner.invoke(app, ["config", "show", str(ROOT / "configs" / "magnetic-tiles.yaml"), "--set", "train.max_epochs=3"])
    assert res.exit_code == 0, res.output
    assert "# Epochs at most." in res.output and "max_epochs: 3" in res.output
    assert "holdout_buffer: null" in res.output  # a default the YAML never wrote
    again = ExperimentConfig.model_validate(yaml.safe_load(res.output))
    assert again == load_config(ROOT / "configs" / "magnetic-tiles.yaml", ["train.max_epochs=3"])


def test_describe_round_trips_every_shipped_config():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert ExperimentConfig.model_validate(yaml.safe_load(describe(cfg))) == cfg, path


def test_show_names_a_bad_field_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nclasses: [{name: a}, {name: b}]\ndata: {train: [], windw: 64}\n")
    res = runner.invoke(app, ["config", "show", str(bad)])
    assert res.exit_code == 1
    assert "unknown field 'data.windw'" in res.output and "Traceback" not in res.output


def test_schema_command_prints_json():
    res = runner.invoke(app, ["config", "schema"])
    assert res.exit_code == 0
    assert json.loads(res.output)["title"] == "terraseg experiment config"


def test_configuration_reference_page_is_current_and_lists_every_field():
    from terraseg.config import ExperimentConfig, TrainConfig
    from terraseg.config.describe import reference_markdown

    text = reference_markdown()
    assert (ROOT / "docs" / "reference" / "config.md").read_text() == text, (
        "run: make site (or python -c 'from terraseg.config.describe import reference_markdown; ...')"
    )
    for name in (*ExperimentConfig.model_fields, *TrainConfig.model_fields):
        assert f"| `{name}` |" in text, name
    row = next(line for line in text.splitlines() if line.startswith("| `max_minutes` |"))
    assert "`float` \\| `null`" in row and "| minutes |" in row
