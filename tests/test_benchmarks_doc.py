"""docs/benchmarks.md: every figure above its history section can be measured again (date, machine, commit, command)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def _current() -> list[tuple[str, str]]:
    """(section heading, line) of every line above the history section."""
    out, section = [], ""
    for line in DOC.read_text().splitlines():
        if line.startswith("## History"):
            break
        if line.startswith("## "):
            section = line
        out.append((section, line))
    return out


def test_every_current_row_has_a_date_a_machine_a_commit_and_a_command():
    rows = 0
    for section, line in _current():
        if not section:
            continue
        assert re.search(r"\b20\d\d-\d\d-\d\d\b", section) and re.search(r"AMD|Intel|NVIDIA", section), section
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")] if line.startswith("| ") else []
        if len(cells) != 3 or cells[0] == "what" or line.startswith("|---"):
            continue
        what, figure, command = cells
        rows += 1
        assert re.search(r"\b[0-9a-f]{7}\b", what + " " + figure), f"no commit: {what[:80]}"
        assert command.startswith("`") and not re.match(r"`?same\b", command) and "..." not in command, (
            f"no command that runs: {what[:60]}: {command[:60]}"
        )
    assert rows >= 10


def test_history_rows_say_when_and_where():
    text = DOC.read_text()
    assert "## History" in text
    history = text.split("## History", 1)[1]
    for line in history.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")] if line.startswith("| ") else []
        if len(cells) == 3 and cells[0] != "what" and not line.startswith("|---"):
            assert not re.fullmatch(r"same( script)?", cells[2]) and "..." not in cells[2], cells[0][:60]
