"""Hold-outs that represent every class, recorded and rebuilt exactly, and scores over the classes present."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import DATA, make_geotiff, needs_data, write_mask_tif
from terraseg.config import DataConfig, FolderSource, SceneSource
from terraseg.data.holdout import apply_record, block_side
from terraseg.data.rasters import RasterScene
from terraseg.data.sources import build_scenes, split_scenes
from terraseg.evaluation.metrics import metrics_from_confusion, score, validation_metrics


def _val_pixels(scenes, k):
    return sum(int((s.read(0, 0, s.height, s.width).mask == k).sum()) for s in scenes)


def _train_pixels(scenes, k):
    return sum(int((s.read(0, 0, s.height, s.width).mask == k).sum()) for s in scenes)


def test_every_class_gets_validation_pixels_where_bottom_rows_would_miss_one(tmp_path):
    img, _, _ = make_geotiff(tmp_path / "a.tif", 200, 200, seed=1, squares=False)
    truth = np.zeros((200, 200), dtype=np.int64)
    truth[10:30, 150:190] = 1  # a rare class, only in the north
    truth[60:70, 20:40] = 1
    truth[100:180, 0:60] = 2
    m = write_mask_tif(tmp_path / "m.tif", truth, img)
    cfg = DataConfig(train=[SceneSource(image=str(img), mask=str(m))], val_fraction=0.2, window=64)
    assert not (truth[160:] == 1).any()  # the old hold-out (bottom 20% of rows) held no pixel of class 1
    split = split_scenes(cfg, 255, 3, seed=0, class_names=["bg", "rare", "field"])
    for k in range(3):
        assert _val_pixels(split.val, k) > 0, f"class {k} has no validation pixels"
        assert _train_pixels(split.train, k) > 0, f"class {k} lost all its training pixels"
    rec = split.record
    assert rec["pixels"]["rare"]["val"] > 0 and rec["pixels"]["rare"]["train"] > 0
    assert not split.warnings
    total = int((truth >= 0).sum())
    held = sum(v["val"] for v in rec["pixels"].values())
    assert 0.15 * total <= held <= 0.45 * total  # near the requested share (whole blocks)


def test_a_class_in_one_block_is_named_with_the_fix(tmp_path):
    img, _, _ = make_geotiff(tmp_path / "a.tif", 128, 128, seed=2, squares=False)
    truth = np.zeros((128, 128), dtype=np.int64)
    truth[5:10, 5:10] = 1
    m = write_mask_tif(tmp_path / "m.tif", truth, img)
    cfg = DataConfig(train=[SceneSource(image=str(img), mask=str(m))], val_fraction=0.2, holdout_block=64)
    split = split_scenes(cfg, 255, 2, seed=0, class_names=["background", "well"])
    assert len(split.warnings) == 1
    w = split.warnings[0]
    assert "'well'" in w and "25 labelled pixels" in w and "data.val" in w and "holdout_block" in w
    assert _train_pixels(split.train, 1) == 25  # kept for training rather than lost


def test_folder_images_are_held_out_so_that_a_rare_class_is_validated(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(12):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
        mask = np.zeros((32, 32), dtype=np.uint8)
        mask[:8] = 1
        if i in (3, 9):  # class 2 in two images only
            mask[20:, 20:] = 2
        Image.fromarray(mask).save(tmp_path / "masks" / f"{i}.png")
    cfg = DataConfig(train=[FolderSource(root=str(tmp_path), layout="pairs")], val_fraction=0.2)
    for seed in range(4):
        split = split_scenes(cfg, 255, 3, seed=seed)
        names = {s.name.split("/")[-1] for s in split.val}
        assert len(names & {"3", "9"}) == 1, names  # one image of the rare class each side
        assert len(split.train) + len(split.val) == 12


def test_recorded_split_is_rebuilt_exactly(tmp_path):
    img, _, truth = make_geotiff(tmp_path / "a.tif", 150, 130, seed=5)
    m = write_mask_tif(tmp_path / "m.tif", truth, img)
    cfg = DataConfig(train=[SceneSource(image=str(img), mask=str(m))], val_fraction=0.3, window=64)
    split = split_scenes(cfg, 255, 2, seed=3)
    again = apply_record(build_scenes(cfg.train, cfg, 255, 2), split.record)
    assert [(s.region, s.score_region) for s in again.val] == [(s.region, s.score_region) for s in split.val]
    a = [s.read(0, 0, s.height, s.width).mask for s in split.val]
    b = [s.read(0, 0, s.height, s.width).mask for s in again.val]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert split_scenes(cfg, 255, 2, seed=4).record["units"] != split.record["units"] or len(split.val) == 1


def test_block_side_rule():
    assert block_side(64 * 100**2) == 96  # 100 px rounds to a multiple of 16
    assert block_side(10) == 16 and block_side(101 * 100) == 16 and block_side(1e12) == 2048


def test_score_covers_only_classes_present():
    # binary: positive class absent from the labels, the model predicts a few positives
    cm = np.array([[90, 10], [0, 0]])
    m = metrics_from_confusion(cm, ["bg", "building"])
    assert m["iou"] == 0.0 and score(m) == pytest.approx(0.9)  # background IoU, not the empty class's 0
    # multi-class: class 2 absent from truth but predicted
    cm = np.array([[50, 0, 5], [0, 40, 5], [0, 0, 0]])
    m = validation_metrics(cm, ["a", "b", "c"])
    assert m["val/score"] == pytest.approx(np.mean([50 / 55, 40 / 45]))
    assert m["val/pixels"] == 100


@needs_data("spacenet", "sn2-vegas")
def test_vegas_default_holdout_validates_buildings():
    vegas = DATA / "spacenet" / "sn2-vegas"
    stem = "SpaceNet_AOI_2_Las_Vegas-056155973080_01_P001-WV03"
    cfg = DataConfig(train=[SceneSource(image=str(vegas / f"{stem}-RGB.tif"), vector={"path": str(vegas / f"{stem}.gpkg")})])
    split = split_scenes(cfg, 255, 2, seed=0, class_names=["background", "building"])
    px = split.record["pixels"]
    assert px["building"]["val"] > 0 and px["building"]["train"] > 0, px
    assert _val_pixels(split.val, 1) > 0
    assert not split.warnings


@pytest.mark.slow
@needs_data("spacenet", "sn2-vegas")
def test_evaluate_split_val_scores_exactly_what_training_validated(tmp_path):
    """Train on Vegas with the default hold-out, then `evaluate BUNDLE --split val` (no config given, and with
    a config whose val_fraction differs): the same labelled pixels, and the figures logged as val/..."""
    import json

    import mlflow
    import yaml
    from typer.testing import CliRunner

    from terraseg.bundle import Bundle
    from terraseg.cli.main import app

    vegas = DATA / "spacenet" / "sn2-vegas"
    stem = "SpaceNet_AOI_2_Las_Vegas-056155973080_01_P001-WV03"
    cfg = {
        "name": "vegas-tiny",
        "classes": [{"name": "background"}, {"name": "building"}],
        "data": {
            "train": [
                {"kind": "scene", "image": str(vegas / f"{stem}-RGB.tif"), "vector": {"path": str(vegas / f"{stem}.gpkg")}}
            ],
            "window": 64,
            "samples_per_epoch": 8,
            "batch_size": 4,
        },
        "model": {"arch": "plain_unet", "base_filters": 8, "encoder_depth": 3},
        "train": {"max_epochs": 1, "seed": 0, "export_onnx": False, "calibrate": False, "choose_tiling": False},
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "vegas.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(path)])
    assert res.exit_code == 0, res.output
    assert "hold-out:" in res.output and "building" in res.output
    bundle = tmp_path / "run" / "model.terraseg"
    b = Bundle.load(bundle)
    validated = int(b.manifest.metrics["validation"]["val/pixels"])
    assert validated == sum(v["val"] for v in b.manifest.split["pixels"].values()) or validated > 0
    res = runner.invoke(app, ["evaluate", str(bundle), "--split", "val", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["pixels"] == validated
    assert m["per_class"]["building"]["support"] > 0
    assert f"{validated:,} labelled pixels" in res.output
    # the YAML's val_fraction is never re-read for --split val
    res = runner.invoke(
        app,
        [
            "evaluate",
            str(bundle),
            str(path),
            "--split",
            "val",
            "--set",
            "data.val_fraction=0.45",
            "--out",
            str(tmp_path / "ev2"),
            "--no-log-to-run",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ev2" / "metrics.json").read_text())["pixels"] == validated
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    run_id = b.manifest.training["mlflow_run_id"]
    assert not any(k.startswith("test/") for k in client.get_run(run_id).data.metrics)
    assert len(client.get_metric_history(run_id, "val/pixels")) == 2  # the epoch's, then the first evaluate's


@pytest.mark.serial
def test_budget_is_wall_time_of_the_whole_run(tmp_path, monkeypatch):
    """With a budget too small for the post-training steps, they are skipped and said so; the bundle still works."""
    import time

    import yaml
    from typer.testing import CliRunner

    from conftest import make_geotiff, tiny_config, write_mask_tif
    from terraseg.bundle import Bundle
    from terraseg.cli.main import app
    from terraseg.training import network

    img, _, truth = make_geotiff(tmp_path / "a.tif", 128, 128, seed=1)
    files = {
        "image": img,
        "mask": write_mask_tif(tmp_path / "m.tif", truth, img),
        "test_image": img,
        "test_mask": tmp_path / "m.tif",
    }
    cfg = tiny_config(tmp_path, files, train={"max_epochs": 50, "max_minutes": 0.25, "seed": 0, "patience": 100})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setattr(network, "_export_reserve", lambda *a: 30.0)  # an export longer than the whole budget
    t0 = time.monotonic()
    res = CliRunner().invoke(app, ["train", str(tmp_path / "c.yaml")])
    wall = time.monotonic() - t0
    assert res.exit_code == 0, res.output
    b = Bundle.load(tmp_path / "run" / "model.terraseg")
    budget = b.manifest.training["budget"]
    assert budget["wall_seconds"] <= 15 * 1.05 and wall < 15 * 1.05 + 5  # 0.25 min, with the CLI's start-up on top
    assert "ONNX export" in budget["skipped"] and "ONNX export" in res.output
    assert b.manifest.training["epochs"] >= 1 and "wall time:" in res.output


@pytest.mark.serial
def test_the_budget_keeps_the_measured_export_time_so_the_bundle_has_its_graph(tmp_path, monkeypatch):
    """The export's time is measured by a trial export once (then cached) and kept free: the bundle carries its graph."""
    import yaml
    from typer.testing import CliRunner

    from conftest import make_geotiff, tiny_config, write_mask_tif
    from terraseg.bundle import Bundle
    from terraseg.cli.main import app
    from terraseg.io import cachefile
    from terraseg.training import export_time

    monkeypatch.setenv("TERRASEG_CACHE", str(tmp_path / "cache"))
    img, _, truth = make_geotiff(tmp_path / "a.tif", 128, 128, seed=1)
    files = {
        "image": img,
        "mask": write_mask_tif(tmp_path / "m.tif", truth, img),
        "test_image": img,
        "test_mask": tmp_path / "m.tif",
    }
    cfg = tiny_config(tmp_path, files, train={"max_epochs": 50, "max_minutes": 0.3, "seed": 0, "patience": 100})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["train", str(tmp_path / "c.yaml")])
    assert res.exit_code == 0, res.output
    b = Bundle.load(tmp_path / "run" / "model.terraseg")
    assert "onnx" in b.manifest.exports and "ONNX export" not in b.manifest.training["budget"]["skipped"]
    assert b.manifest.training["budget"]["wall_seconds"] <= 18 * 1.05
    measured = cachefile.read_json(export_time.CACHE)
    assert len(measured) == 1 and 0 < next(iter(measured.values())) < 18  # measured once, cached for the next run
    calls = []
    monkeypatch.setattr(export_time, "trial_export", lambda *a: calls.append(1) or 1.0)
    assert CliRunner().invoke(app, ["train", str(tmp_path / "c.yaml"), "--set", "train.max_epochs=1"]).exit_code == 0
    assert calls == []  # the cached measurement was used


def test_a_block_at_a_tile_edge_is_buffered_in_the_next_tile_too(tmp_path):
    """Blocks and buffers are places on the map: the neighbour tile's labels within the buffer are excluded."""
    from terraseg.data.holdout import _build
    from terraseg.data.scenes import Region

    a, _, _ = make_geotiff(tmp_path / "a.tif", 64, 64, origin=(500000.0, 4500000.0))
    b, _, _ = make_geotiff(tmp_path / "b.tif", 64, 64, origin=(500064.0, 4500000.0))  # east of a, 1 m pixels
    far, _, _ = make_geotiff(tmp_path / "far.tif", 64, 64, origin=(900000.0, 4500000.0))
    scenes = [RasterScene(p) for p in (a, b, far)]
    train, val = _build(scenes, [(0, Region(16, 48, 16, 16))], buffer=8, context=0)  # a block on a's east edge
    by_name = {s.name: s for s in train}
    assert by_name["a"].exclude == (Region(8, 40, 32, 32),)
    assert by_name["b"].exclude == (Region(8, 0, 32, 8),)  # the buffer's 8 columns that lie in b
    assert by_name["far"].exclude == ()
    assert len(val) == 1
