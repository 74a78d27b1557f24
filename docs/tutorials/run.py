"""Run the tutorials' commands on real data and keep what they print and draw, for the documentation site.

Each tutorial (``docs/tutorials/*.md``) is run as a reader would: its ``bash`` code blocks, in order, in
a fresh folder ``runs/tutorials/<name>/`` (with the repository's ``configs/`` in it), with the data root in
``$TERRASEG_DATA`` and ``$MINUTES`` as the training budget (a tutorial writes ``${MINUTES:-10}``: ten
minutes for a reader, what ``--minutes`` says here). What block ``k`` prints is written into the page
itself, into the ``text`` fence after its ``<!-- output: block-k -->`` marker (so the page shows it on GitHub
as on the site), and the files a tutorial names in its ``<!-- assets: ... -->`` comment (paths in its
folder) are copied to ``docs/tutorials/generated/<name>/`` (committed; a PNG over 200 kB is reduced to a
palette image, then scaled down, until it fits).
A block preceded by ``<!-- not run -->`` is shown but not run. A failing block stops its tutorial with
the command's output; the script exits 1 when any tutorial failed.

Usage:
    python docs/tutorials/run.py [NAME ...] [--minutes 1]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BLOCK = re.compile(r"(<!-- not run -->\s*)?```bash\n(.*?)```", re.S)
OUTPUT = re.compile(r"(<!-- output: block-(\d+) -->\n```text\n)(.*?)(\n```)", re.S)
MAX_ASSET_BYTES = 200_000
ASSETS = re.compile(r"<!-- assets: (.*?) -->", re.S)


def run_tutorial(page: Path, minutes: float, env: dict[str, str]) -> tuple[bool, float]:
    """Run one tutorial's blocks; write their output and assets under ``generated/<name>``."""
    name = page.stem
    work = ROOT / "runs" / "tutorials" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "configs").symlink_to(ROOT / "configs")  # commands are written as from the repository's root
    out = HERE / "generated" / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    text = page.read_text()
    printed_by: dict[str, str] = {}
    t0 = time.monotonic()
    k = 0
    for m in BLOCK.finditer(text):
        k += 1
        if m.group(1):
            continue
        r = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", m.group(2)],
            cwd=work,
            env=env | {"MINUTES": f"{minutes:g}"},
            capture_output=True,
            text=True,
        )
        printed = (r.stdout + r.stderr).rstrip()
        printed_by[str(k)] = _tidy(printed, work, env["TERRASEG_DATA"])
        if r.returncode:
            print(f"{name}: block {k} failed (exit {r.returncode}):\n{printed[-3000:]}", file=sys.stderr)
            return False, time.monotonic() - t0
    for spec in ASSETS.findall(text):
        for item in spec.split():
            src, _, dst = item.partition("=")
            found = sorted(work.glob(src))  # a name, or a pattern whose first match is taken
            if not found:
                print(f"{name}: no file {src} to show", file=sys.stderr)
                return False, time.monotonic() - t0
            _copy_small(found[0], out / (dst or found[0].name))
    new = OUTPUT.sub(lambda m: m.group(1) + printed_by.get(m.group(2), m.group(3)) + m.group(4), text)
    if new != text:
        page.write_text(new)
    return True, time.monotonic() - t0


def _copy_small(src: Path, dst: Path) -> None:
    """Copy an asset; a PNG over ``MAX_ASSET_BYTES`` becomes a 256-colour palette image, then is halved in size
    until it fits (the pages are read on GitHub too, where large images slow the page)."""
    shutil.copy(src, dst)
    if dst.suffix.lower() != ".png" or dst.stat().st_size <= MAX_ASSET_BYTES:
        return
    from PIL import Image

    img = Image.open(src).convert("RGB")
    while True:
        img.quantize(256, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)
        if dst.stat().st_size <= MAX_ASSET_BYTES or min(img.size) < 64:
            return
        img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.Resampling.LANCZOS)


def _tidy(text: str, work: Path, data: str) -> str:
    """Printed text as a reader sees it: paths relative to the tutorial's folder or the data root, no
    progress-bar frames, no MLflow start-up log."""
    text = text.replace(str(work) + "/", "").replace(str(ROOT) + "/", "").replace(data, "$TERRASEG_DATA")
    text = "\n".join(line for line in text.splitlines() if " INFO mlflow." not in line)
    return "\n".join(line for line in text.splitlines() if "\r" not in line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="tutorials to run (default: all)")
    p.add_argument("--minutes", type=float, default=1.0, help="$MINUTES: the training budget of each run")
    a = p.parse_args()
    from terraseg.settings import data_root

    bin_dir = str(Path(sys.executable).parent)
    env = os.environ | {
        "TERRASEG_DATA": str(data_root()),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        "NO_COLOR": "1",
        "COLUMNS": "110",
    }
    pages = [p for p in sorted(HERE.glob("*.md")) if p.stem != "index" and (not a.names or p.stem in a.names)]
    failed = []
    for page in pages:
        ok, seconds = run_tutorial(page, a.minutes, env)
        print(f"{page.stem:16} {'ok' if ok else 'FAILED':7} {seconds:6.0f} s", flush=True)
        failed += [] if ok else [page.stem]
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
