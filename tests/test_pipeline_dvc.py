"""DVC pipeline over terraseg commands, CI-sized, on real data read in place.

A tiny copy of the Massachusetts pipeline (rasterize -> train -> evaluate) runs with `dvc repro` in a
throw-away git + DVC repository; changing a training parameter re-runs train and evaluate, never
rasterize; an up-to-date pipeline is a no-op; `dvc metrics show` reads the evaluation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import DATA, needs_data

DVC = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
pytestmark = [pytest.mark.integration, pytest.mark.skipif(DVC is None, reason="dvc not installed (make install)")]


def _run(cmd: list[str], cwd: Path) -> str:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


@pytest.mark.slow
@needs_data("massachusetts-buildings")
def _crop(src: Path, dst: Path, size: int = 384) -> Path:
    """A georeferenced ``size`` x ``size`` crop of the middle of ``src``: the pipeline's stages, not the tile's size, are
    under test."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(src) as ds:
        win = Window((ds.width - size) // 2, (ds.height - size) // 2, size, size)
        profile = ds.profile | {"width": size, "height": size, "transform": ds.window_transform(win)}
        with rasterio.open(dst, "w", **profile) as out:
            out.write(ds.read(window=win))
    return dst


def test_dvc_repro_reruns_only_what_changed(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    mb = DATA / "massachusetts-buildings"
    tile = _crop(mb / "22978945_15.tif", tmp_path / "tile.tif")
    cfg = {
        "name": "mb-tiny",
        "classes": [{"name": "background"}, {"name": "building"}],
        "data": {
            "train": [{"kind": "scene", "image": str(tile), "mask": "set by dvc.yaml"}],
            "window": 64,
            "samples_per_epoch": 16,
            "batch_size": 8,
            "val_fraction": 0.2,
        },
        "model": {"arch": "plain_unet", "base_filters": 8, "encoder_depth": 3},
        "train": {"max_epochs": 1, "export_onnx": False},
        "tracking": {"enabled": False},
    }
    (repo / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.002}}))
    stages = {
        "rasterize": {
            "cmd": f"terraseg --quiet rasterize {mb / 'massachusetts_buildings.zip'} --reference {tile} --out data/mask.tif",
            "deps": [str(mb / "massachusetts_buildings.zip")],
            "outs": ["data/mask.tif"],
        },
        "train": {
            "cmd": "terraseg --quiet train tiny.yaml --set data.train.0.mask=$PWD/data/mask.tif --set optimizer.lr=${train.lr} "
            "--set output_dir=run",
            "deps": ["tiny.yaml", "data/mask.tif"],
            "params": ["train"],
            "outs": ["run/model.terraseg"],
            "plots": [{"run/history.csv": {"x": "epoch", "y": "val/score", "cache": False}}],
        },
        "evaluate": {
            "cmd": f"terraseg --quiet evaluate run/model.terraseg {tile} --labels data/mask.tif "
            "--out reports --overlays 0 --backend torch --precision 32 --no-channels-last",
            "deps": ["run/model.terraseg", "data/mask.tif"],
            "metrics": [{"reports/metrics.json": {"cache": False}}],
        },
    }
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    _run(["git", "init", "-q"], repo)
    _run([DVC, "init", "-q"], repo)
    first = _run([DVC, "repro"], repo)
    assert all(f"Running stage '{s}'" in first for s in ("rasterize", "train", "evaluate"))
    metrics = json.loads(_run([DVC, "metrics", "show", "--json"], repo))
    assert "reports/metrics.json" in json.dumps(metrics) and (repo / "run" / "history.csv").read_text().startswith("epoch,")
    assert "didn't change, skipping" in _run([DVC, "repro"], repo)  # up to date: nothing runs
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.001}}))
    second = _run([DVC, "repro"], repo)
    assert "Running stage 'rasterize'" not in second and "Stage 'rasterize' didn't change" in second
    assert "Running stage 'train'" in second and "Running stage 'evaluate'" in second
    plots = json.loads(_run([DVC, "plots", "show", "--json"], repo))
    assert "run/history.csv" in json.dumps(plots)  # the training curve DVC renders, from the run's history.csv
    _run(["git", "add", "-A"], repo)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], repo)
    exp = _run([DVC, "exp", "run", "-S", "train.lr=0.0005"], repo)
    assert "Running stage 'train'" in exp and "Running stage 'rasterize'" not in exp  # an experiment re-runs training only
    shown = json.loads(_run([DVC, "exp", "show", "--json"], repo))
    assert "0.0005" in json.dumps(shown)  # the experiment is recorded with its parameter


def test_repository_pipelines_are_valid():
    """The shipped dvc.yaml parses, and every stage's command is a terraseg command."""
    root = Path(__file__).resolve().parents[1]
    out = _run([DVC, "stage", "list", "--all"], root)
    for stage in (
        "massachusetts-train",
        "massachusetts-evaluate",
        "massachusetts-vectorize",
        "magnetic-split",
        "magnetic-export",
        "intel-evaluate",
    ):
        assert stage in out
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    assert all("terraseg" in st.get("cmd", st.get("do", {}).get("cmd", "")) for st in spec["stages"].values())
