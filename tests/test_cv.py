"""Cross-validation folds: spatial blocks with a buffer whose labels never reach training, and `terraseg cv` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from conftest import make_geotiff, tiny_config, write_mask_tif
from terraseg.config import ExperimentConfig
from terraseg.data.sources import build_scenes
from terraseg.training.cv import fold_scenes


def _scene_cfg(tmp_path, **over):
    img, _, truth = make_geotiff(tmp_path / "scene.tif", 192, 256, seed=3)
    files = {"image": img, "mask": write_mask_tif(tmp_path / "mask.tif", truth, img)}
    files |= {"test_image": img, "test_mask": files["mask"]}
    return ExperimentConfig.model_validate(tiny_config(tmp_path, files, **over))


def test_folds_cover_every_block_once_and_hide_held_out_labels(tmp_path):
    cfg = _scene_cfg(tmp_path)
    scenes = build_scenes(cfg.data.train, cfg.data, cfg.ignore_index, cfg.num_classes)
    res = abs(scenes[0].transform.a)
    folds = fold_scenes(scenes, 3, 64 * res, 16 * res, seed=0)
    assert len(folds) == 3
    seen = np.zeros((192, 256), int)
    unknown = scenes[0].read(0, 0, 192, 256).mask == cfg.ignore_index  # nodata in the generated scene
    for train, val in folds:
        expected = unknown.copy()
        for v in val:
            r, c = v.region.row_off, v.region.col_off
            seen[r : r + v.height, c : c + v.width] += 1
            expected[max(r - 16, 0) : r + v.height + 16, max(c - 16, 0) : c + v.width + 16] = True  # block + 16 px buffer
            assert v.read(0, 0, v.height, v.width).mask.shape == (v.height, v.width)
        (t,) = train
        hidden = t.read(0, 0, 192, 256).mask == cfg.ignore_index
        assert (hidden == expected).all()  # exactly the validation blocks and their buffer are hidden from training
        assert 0.2 < expected.mean() < 0.9
    assert (seen == 1).all()  # the folds' validation blocks tile the scene exactly once


@pytest.mark.slow
def test_cv_command_reports_spatial_and_random(tmp_path):
    from terraseg.cli.main import app

    cfg = tiny_config(
        tmp_path,
        {
            "image": make_geotiff(tmp_path / "s.tif", 160, 192, seed=4)[0],
            "mask": tmp_path / "m.tif",
            "test_image": tmp_path / "s.tif",
            "test_mask": tmp_path / "m.tif",
        },
    )
    write_mask_tif(tmp_path / "m.tif", make_geotiff(tmp_path / "s.tif", 160, 192, seed=4)[2], tmp_path / "s.tif")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(app, ["cv", str(path), "--folds", "2", "--block-size", "64", "--out", str(tmp_path / "cv")])
    assert r.exit_code == 0, r.output
    assert "spatial" in r.output and "random - spatial" in r.output
    report = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert set(report["per_fold"]) == {"spatial", "random"} and all(len(v) == 2 for v in report["per_fold"].values())
    for method in ("spatial", "random"):
        s = report["summary"][method]["val/score"]
        assert 0.0 <= s["mean"] <= 1.0 and s["std"] >= 0.0
    assert (
        abs(
            report["gap_random_minus_spatial"]["val/score"]
            - (report["summary"]["random"]["val/score"]["mean"] - report["summary"]["spatial"]["val/score"]["mean"])
        )
        < 1e-9
    )
