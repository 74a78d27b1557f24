"""Every command block of docs/own-data.md, run as written on generated data (budgets shortened to seconds)."""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import make_geotiff
from terraseg.cli.main import app

runner = CliRunner()

PAGE = Path(__file__).resolve().parents[1] / "docs" / "own-data.md"
TERRASEG = str(Path(sys.executable).with_name("terraseg"))


def _data(root: Path) -> None:
    """SCENES/ (two adjacent GeoTIFFs), labels.gpkg (class names as text, over the western part), extent.gpkg (that
    part), other_scene.tif with other_labels.gpkg, and NEW_SCENES/new1.tif."""
    import geopandas as gpd
    from shapely.geometry import box

    (root / "SCENES").mkdir()
    (root / "NEW_SCENES").mkdir()
    rasters = {
        "SCENES/scene1.tif": 500000.0,
        "SCENES/scene2.tif": 500096.0,
        "other_scene.tif": 501000.0,
        "NEW_SCENES/new1.tif": 502000.0,
    }
    for i, (name, x) in enumerate(rasters.items()):
        make_geotiff(root / name, 96, 96, seed=i, origin=(x, 4500000.0))
    rng = np.random.default_rng(0)

    def squares(x0, x1, n):
        geoms = [
            box(x, y, x + s, y + s)
            for x, y, s in zip(rng.uniform(x0, x1 - 12, n), rng.uniform(4500000, 4500084, n), rng.uniform(5, 11, n))
        ]
        return gpd.GeoDataFrame(
            {"class": [("Building", "Forest", "Water")[k % 3] for k in range(n)]}, geometry=geoms, crs="EPSG:32618"
        )

    squares(500000, 500150, 30).to_file(root / "labels.gpkg")
    gpd.GeoDataFrame(geometry=[box(500000, 4500000, 500150, 4500096)], crs="EPSG:32618").to_file(root / "extent.gpkg")
    squares(501000, 501096, 15).to_file(root / "other_labels.gpkg")


def _commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", PAGE.read_text(), flags=re.S)
    return [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_every_command_of_the_own_data_page_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _data(tmp_path)
    commands = _commands()
    assert len(commands) == 8 and all(c.startswith("terraseg ") for c in commands), commands
    for command in commands:
        args = shlex.split(command.replace("--minutes 10", "--minutes 0.2"))
        args[0] = TERRASEG
        if args[1] == "serve":  # the page's server: it answers, then stops
            port = _free_port()
            args[args.index("--port") + 1] = str(port)
            proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                for _ in range(240):
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                            assert r.status == 200
                            break
                    except OSError:
                        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                        time.sleep(0.5)
                else:
                    pytest.fail("the server never answered /healthz")
            finally:
                proc.terminate()
                proc.wait(30)
            continue
        run = runner.invoke(app, args[1:])  # in this process: the libraries are imported once for all the commands
        assert run.exit_code == 0, f"{command}\n{run.output}"
        assert "Traceback" not in run.output
        if args[1] == "stats":  # what the page says it prints
            assert "CRS EPSG:32618" in run.output and "metre per pixel" in run.output and "band_1: mean" in run.output
        if args[1] == "plan":
            assert "--aoi" not in run.output  # the extent is given: no coverage note
    assert (tmp_path / "runs" / "mymap" / "model.terraseg").is_file() and (tmp_path / "maps" / "new1.gpkg").is_file()
    assert (tmp_path / "eval" / "metrics.json").is_file() and (tmp_path / "eval-val" / "metrics.json").is_file()
