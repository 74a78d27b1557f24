"""Folder splits and manifest sources: `terraseg split FOLDER` writes manifests that training reads (`kind: manifest`)."""

from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from conftest import DATA, needs_data
from terraseg.config import ExperimentConfig
from terraseg.data.sources import build_scenes


@needs_data("magnetic-tiles")
def test_folder_split_stratified_by_subfolder_feeds_training(tmp_path):
    from terraseg.cli.main import app

    r = CliRunner().invoke(
        app,
        [
            "split",
            str(DATA / "magnetic-tiles"),
            "--layout",
            "magnetic_tiles",
            "--include",
            "MT_Crack,MT_Blowhole",
            "--method",
            "stratified",
            "--fractions",
            "0.8,0.2,0",
            "--out",
            str(tmp_path / "split"),
        ],
    )
    assert r.exit_code == 0, r.output
    train, val = (pd.read_csv(tmp_path / "split" / f"{s}.csv") for s in ("train", "val"))
    assert not set(train["chip"]) & set(val["chip"]) and len(train) > 3 * len(val) > 0
    assert set(val["group"]) == set(train["group"]) == {"MT_Crack", "MT_Blowhole"}  # every defect type in both splits
    cfg = ExperimentConfig.model_validate(
        {
            "name": "m",
            "classes": [{"name": "background"}, {"name": "defect"}],
            "data": {
                "train": [{"kind": "manifest", "path": str(tmp_path / "split" / "train.csv"), "binarize": True}],
                "val": [{"kind": "manifest", "path": str(tmp_path / "split" / "val.csv"), "binarize": True}],
                "window": 64,
            },
            "model": {"arch": "plain_unet"},
        }
    )
    scenes = build_scenes(cfg.data.val, cfg.data, cfg.ignore_index, cfg.num_classes)
    assert len(scenes) == len(val)
    mask = scenes[0].read(0, 0, scenes[0].height, scenes[0].width).mask
    assert set(mask.ravel().tolist()) <= {0, 1, cfg.ignore_index} and (mask == 1).any()  # binarized defect masks


@needs_data("magnetic-tiles")
def test_folder_split_refuses_spatial_and_manifest_errors_are_one_line(tmp_path):
    from terraseg.cli.main import app

    r = CliRunner().invoke(
        app,
        [
            "split",
            str(DATA / "magnetic-tiles"),
            "--layout",
            "magnetic_tiles",
            "--method",
            "spatial",
            "--block-size",
            "100",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert r.exit_code != 0 and "no map coordinates" in r.output and "Traceback" not in r.output
    (tmp_path / "bad.csv").write_text("image,label\na.png,b.png\n")
    cfg = ExperimentConfig.model_validate(
        {
            "name": "m",
            "classes": [{"name": "background"}, {"name": "defect"}],
            "data": {"train": [{"kind": "manifest", "path": str(tmp_path / "bad.csv")}], "window": 64},
            "model": {"arch": "plain_unet"},
        }
    )
    import pytest

    from terraseg.errors import InputFileError

    with pytest.raises(InputFileError, match="no column"):
        build_scenes(cfg.data.train, cfg.data, cfg.ignore_index, cfg.num_classes)
