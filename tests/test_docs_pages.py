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
