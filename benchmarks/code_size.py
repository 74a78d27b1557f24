"""The size of ``src/terraseg``: code, docstring, comment and blank lines, in the format the repository adopts.

Each revision given is checked out into a temporary folder and formatted with ``ruff format`` under this checkout's
``pyproject.toml`` before it is counted, so revisions written before and after the formatter are compared alike; the
working tree is counted as it is. Code lines are the lines of statements that are not string expressions (docstrings).

Usage::

    .venv/bin/python benchmarks/code_size.py 14ae43d HEAD     # revisions, formatted alike
    .venv/bin/python benchmarks/code_size.py                  # the working tree
"""

from __future__ import annotations

import argparse
import ast
import io
import subprocess
import sys
import tarfile
import tempfile
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def count(root: Path) -> dict[str, int]:
    """Lines of code, docstrings, comments and blanks, and code statements, of the ``.py`` files under ``root``."""
    n = dict.fromkeys(("code", "docstrings", "comments", "blank", "statements"), 0)
    for p in sorted(root.rglob("*.py")):
        src = p.read_text()
        tree = ast.parse(src)
        docs: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                docs.update(range(node.lineno, node.end_lineno + 1))
            elif isinstance(node, ast.stmt):
                n["statements"] += 1
        comments = {
            t.start[0]
            for t in tokenize.generate_tokens(io.StringIO(src).readline)
            if t.type == tokenize.COMMENT and t.line.strip().startswith("#")
        }
        for i, line in enumerate(src.split("\n")[:-1] if src.endswith("\n") else src.split("\n"), 1):
            key = "blank" if not line.strip() else "docstrings" if i in docs else "comments" if i in comments else "code"
            n[key] += 1
    return n


def at_revision(rev: str) -> dict[str, int]:
    """:func:`count` of ``src/terraseg`` at ``rev``, formatted with this checkout's ruff settings."""
    with tempfile.TemporaryDirectory() as tmp:
        data = subprocess.run(["git", "archive", rev, "src/terraseg"], cwd=ROOT, capture_output=True, check=True).stdout
        tarfile.open(fileobj=io.BytesIO(data)).extractall(tmp, filter="data")
        ruff = Path(sys.executable).with_name("ruff")
        subprocess.run([str(ruff), "format", "-q", "--config", str(ROOT / "pyproject.toml"), tmp], check=True)
        return count(Path(tmp) / "src" / "terraseg")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("revisions", nargs="*", help="git revisions (default: the working tree as it is)")
    a = ap.parse_args()
    rows = [(rev, at_revision(rev)) for rev in a.revisions] or [("working tree", count(ROOT / "src" / "terraseg"))]
    print(f"{'revision':14s} {'code':>7s} {'docstrings':>11s} {'comments':>9s} {'blank':>7s} {'total':>7s} {'statements':>11s}")
    for rev, n in rows:
        total = n["code"] + n["docstrings"] + n["comments"] + n["blank"]
        print(
            f"{rev:14s} {n['code']:7d} {n['docstrings']:11d} {n['comments']:9d} {n['blank']:7d} {total:7d} {n['statements']:11d}"
        )


if __name__ == "__main__":
    main()
