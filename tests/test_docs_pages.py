"""The documentation pages read on GitHub as on the site: outputs in the pages, images committed and small."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_has_no_bare_include_and_no_missing_image(page):
    text = page.read_text()
    assert "--8<--" not in text, f"{page}: an include line GitHub would show as it is"
    assert "(filled in by `make tutorials`)" not in text, f"{page}: run `make tutorials` to write its outputs"
    for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text):
        if "://" in target:
            continue
        image = (page.parent / target).resolve()
        assert image.is_file(), f"{page}: image {target} is missing"
        assert image.stat().st_size <= 200_000, f"{page}: image {target} is over 200 kB"


def test_tutorial_outputs_sit_in_their_pages():
    for page in (DOCS / "tutorials").glob("*.md"):
        for k, body in re.findall(r"<!-- output: block-(\d+) -->\n```text\n(.*?)\n```", page.read_text(), re.S):
            assert body.strip(), f"{page.name}: block {k} shows no output"


def test_api_reference_is_text_with_every_parameter_of_the_public_api():
    """The page reads the same on GitHub and on the site (generated text, no `:::` directive) and documents every
    parameter of each function ``import terraseg`` gives, with a description."""
    import inspect

    import terraseg

    page = (DOCS / "reference" / "api.md").read_text()
    assert not re.search(r"^:::", page, re.M)
    for name in terraseg.__all__:
        fn = getattr(terraseg, name)
        if not callable(fn):
            continue
        section = page.split(f"### `terraseg.{name}`", 1)[1].split("\n### ", 1)[0]
        for p in inspect.signature(fn).parameters.values():
            key = f"**{p.name}" if p.kind is p.VAR_KEYWORD else p.name
            row = re.search(rf"^\| `{re.escape(key)}` \|.*\| ([^|]+) \|$", section, re.M)
            assert row and row.group(1).strip(), f"terraseg.{name}: parameter {key} undocumented in docs/reference/api.md"


@pytest.mark.parametrize("page", ["commands.md", "reference/cli.md", "reference/config.md", "reference/api.md"])
def test_placeholders_survive_as_text(page):
    """`<stem>` outside code would be an HTML tag (dropped on GitHub and the site), `[low, high]` rich markup in --help."""
    text = re.sub(r"```.*?```|`[^`\n]*`", "", (DOCS / page).read_text(), flags=re.S)
    assert not re.findall(r"<[a-z_]+>", text), page


def test_placeholders_survive_in_help():
    from typer.testing import CliRunner

    from terraseg.cli.main import app

    out = " ".join(CliRunner().invoke(app, ["predict", "--help"]).output.replace("│", " ").split())
    assert "<stem>_probs.tif" in out and "[low, high]" in out
