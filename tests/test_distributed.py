"""Multi-process training (Lightning DDP, gloo on the CPU): windows and validation scenes are sharded
over ranks, validation confusion matrices summed, and only rank 0 writes the bundle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import make_geotiff, tiny_config, write_mask_tif
from terraseg.bundle import Bundle
from terraseg.data.datasets import EpochSampler, ShardSampler

ROOT = Path(__file__).resolve().parents[1]


def test_samplers_shard_over_ranks(monkeypatch):
    import terraseg.data.datasets as ds

    one = list(EpochSampler(10, shuffle=True, seed=3))
    monkeypatch.setattr(ds, "rank_and_world", lambda: (0, 2))
    r0, n0, v0 = list(EpochSampler(10, shuffle=True, seed=3)), len(EpochSampler(10)), list(ShardSampler(5))
    monkeypatch.setattr(ds, "rank_and_world", lambda: (1, 2))
    r1, v1 = list(EpochSampler(10, shuffle=True, seed=3)), list(ShardSampler(5))
    assert n0 == 5 and len(r0) == len(r1) == 5
    assert sorted(r0 + r1) == sorted(one)  # together the ranks draw the windows one process draws, none twice
    assert r0 == one[0::2] and r1 == one[1::2]
    assert v0 == [0, 2, 4] and v1 == [1, 3]  # validation scenes: no padding, no repeats
    assert list(ShardSampler(1, pad=True)) == [-1] and list(ShardSampler(1)) == []  # rank 1 of 2 with one scene: a no-op step


def _train(tmp_path: Path, name: str, devices: int, lr: float, files: dict, val: list) -> Bundle:
    strategy = {"strategy": "ddp", "devices": devices} if devices > 1 else {"devices": 1}
    cfg = tiny_config(
        tmp_path,
        files,
        name=name,
        output_dir=str(tmp_path / name),
        data={"val": val, "samples_per_epoch": 16, "batch_size": 8 // devices, "augment": False, "num_workers": 0},
        train={
            "max_epochs": 1,
            "seed": 0,
            "accelerator": "cpu",
            "threads": 1,
            "export_onnx": False,
            "calibrate": False,
            "choose_tiling": False,
            **strategy,
        },
        optimizer={"lr": lr, "scheduler": "none"},
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [sys.executable, "-m", "terraseg", "train", str(path)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("bundle:") == 1  # rank 0 alone reports (and writes) the bundle
    return Bundle.load(tmp_path / name / "model.terraseg")


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path):
    files = {}
    for i, key in enumerate(("image", "test_image")):
        img, _, truth = make_geotiff(tmp_path / f"{key}.tif", 128, 160, seed=10 + i)
        files[key] = img
        files[key.replace("image", "mask")] = write_mask_tif(tmp_path / f"{key}_mask.tif", truth, img)
    val = []
    for i in range(3):  # three validation scenes over two ranks: uneven shares
        img, _, truth = make_geotiff(tmp_path / f"val{i}.tif", 96, 128, seed=20 + i)
        val.append({"kind": "scene", "image": str(img), "mask": str(write_mask_tif(tmp_path / f"val{i}_mask.tif", truth, img))})

    # the same weights (a learning rate that changes nothing): validation is sharded and summed exactly
    a, b = (_train(tmp_path, f"frozen{n}", n, 1e-12, files, val) for n in (1, 2))
    va, vb = a.manifest.metrics["validation"], b.manifest.metrics["validation"]
    for key in ("val/score", "val/miou", "val/dice"):
        assert abs(va[key] - vb[key]) < 1e-6, (key, va[key], vb[key])
    assert b.manifest.training["world_size"] == 2 and a.manifest.training["world_size"] == 1

    # real learning: 2 ranks x 4 windows average the same gradients as 1 x 8 but batch norm sees 4 windows, not 8
    c, d = (_train(tmp_path, f"learn{n}", n, 1e-2, files, val) for n in (1, 2))
    sc, sd = c.manifest.metrics["validation"]["val/score"], d.manifest.metrics["validation"]["val/score"]
    assert abs(sc - sd) < 0.1, (sc, sd)
