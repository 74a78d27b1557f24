"""Integration on real data from the data root: each example config trains 1 short epoch and evaluates.

These check that the real layouts, dtypes and label formats flow through the whole pipeline; the
accuracy figures themselves are measured by benchmarks/accuracy.py, not here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import DATA, make_geotiff, needs_data, tiny_config
from terraseg import evaluate, predict
from terraseg.bundle import Bundle
from terraseg.config import load_config
from terraseg.data.sources import train_val_scenes
from terraseg.infer.sliding import predictor_for
from terraseg.training.run import train


def _short(cfg_path, tmp_path, *extra):
    return load_config(
        cfg_path,
        [
            f"output_dir={tmp_path / 'run'}",
            "tracking.enabled=false",
            "train.max_epochs=1",
            "data.samples_per_epoch=4",
            "data.batch_size=4",
            *extra,
        ],
    )


@pytest.mark.slow
@needs_data("magnetic-tiles")
def test_magnetic_tiles_config_end_to_end(tmp_path):
    cfg = _short(
        "configs/magnetic-tiles.yaml",
        tmp_path,
        "data.train.0.include=[MT_Fray]",
        "model.encoder_depth=3",
        "train.export_onnx=false",
    )
    res = train(cfg)
    b = Bundle.load(res.bundle_path)
    assert b.in_channels == 1 and b.class_names == ["background", "defect"]
    val = train_val_scenes(cfg.data, cfg.ignore_index, cfg.num_classes, cfg.train.seed)[1]
    assert 4 <= len(val) <= 7  # whole images holding about 20% of the labelled pixels of the 26 MT_Fray pairs, seeded
    assert sum(int((s.read(0, 0, s.height, s.width).mask == 1).sum()) for s in val) > 0  # defects validated
    m = evaluate(
        b, val, tmp_path / "eval", window=192, backend="torch", precision="32", channels_last=False
    )  # the runtime's choice: test_runtime.py
    assert m["pixels"] == sum(s.height * s.width for s in val)
    # reference Dice from the predictor's class ids and the masks, computed here with numpy
    pred = predictor_for(b, window=192, backend="torch", precision="32", channels_last=False)
    tp = fp = fn = 0
    for s in val:
        ids, _ = pred.predict_array(s)
        truth = s.read(0, 0, s.height, s.width).mask
        keep = truth != cfg.ignore_index
        p1, t1 = (ids == 1) & keep, (truth == 1) & keep
        tp, fp, fn = tp + int((p1 & t1).sum()), fp + int((p1 & ~t1).sum()), fn + int((~p1 & t1 & keep).sum())
    assert m["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # training validated with the same procedure evaluate uses by default (one epoch: the best is the last)
    prec = {"bf16-mixed": "bf16", "16-mixed": "16"}.get(cfg.training_precision(), "32")  # the precision validation ran in
    # the layout too: NHWC and NCHW round differently in the last digits (validation ran in train.channels_last)
    default = evaluate(b, val, tmp_path / "eval-default", backend="torch", precision=prec, channels_last=cfg.train.channels_last)
    assert b.manifest.metrics["validation"]["val/iou"] == pytest.approx(default["iou"], abs=1e-9)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["pixels"] == m["pixels"]


@pytest.mark.slow
@needs_data("loveda-samples")
def test_loveda_multiclass_deeplab(tmp_path):
    # the seven classes and LoveDA's nodata are under test: no export, tiling choice or calibration after the epoch
    cfg = _short(
        "configs/loveda.yaml",
        tmp_path,
        "model.encoder=resnet18",
        "train.export_onnx=false",
        "train.choose_tiling=false",
        "train.calibrate=false",
    )
    res = train(cfg)
    b = Bundle.load(res.bundle_path)
    assert b.num_classes == 7
    val = train_val_scenes(cfg.data, cfg.ignore_index, cfg.num_classes, cfg.train.seed)[1][:1]  # one 1024^2 scene
    # an explicit runtime: the scores and the nodata rule are under test here, the measured choice in test_runtime.py
    runtime = dict(backend="torch", precision="32", channels_last=False)
    m = evaluate(b, val, tmp_path / "eval", window=512, overlays=1, **runtime)
    assert len(m["confusion_matrix"]) == 7 and "iou" not in m
    from PIL import Image

    raw = [np.asarray(Image.open(s.mask_path)) for s in val]
    assert m["pixels"] == sum(int((r != 0).sum()) for r in raw)  # LoveDA no-data (value 0) pixels are ignored
    assert m["per_class"]["agriculture"]["support"] == sum(int((r == 7).sum()) for r in raw)  # 7 -> id 6
    out = predict(b, [DATA / "loveda-samples/Train/Rural/images_png/0.png"], tmp_path / "pred", window=512, **runtime)
    assert not out.failures

    ids = np.asarray(Image.open(tmp_path / "pred" / "0.png"))
    assert ids.shape == (1024, 1024) and ids.max() < 7


@pytest.mark.slow
@needs_data("sen1floods11")
def test_thirteen_band_int16_with_nodata_labels(tmp_path):
    s2 = next((DATA / "sen1floods11" / "S2").glob("*.tif"))
    lab = next((DATA / "sen1floods11" / "Labels").glob("*.tif"))
    cfg = tiny_config(tmp_path, {"image": s2, "mask": lab, "test_image": s2, "test_mask": lab})
    cfg["data"]["train"][0]["mask_nodata"] = -1
    cfg["data"]["test"][0]["mask_nodata"] = -1
    import yaml

    p = tmp_path / "s2.yaml"
    p.write_text(yaml.safe_dump(cfg))
    res = train(load_config(p))
    b = Bundle.load(res.bundle_path)
    assert b.in_channels == 13 and b.manifest.input.dtype == "int16"
    out = predict(b, [s2], tmp_path / "pred")
    import rasterio

    with rasterio.open(s2) as src, rasterio.open(out.outputs[str(s2)]["prediction"]) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform and dst.crs.to_epsg() == 4326


def test_bf16_autocast_training_runs(tmp_path, scene_files, monkeypatch):
    import torch
    import yaml

    from terraseg.training.module import SegmentationModule

    seen: list[tuple[bool, torch.dtype]] = []
    step = SegmentationModule.training_step

    def recording_step(self, batch, batch_idx):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return step(self, batch, batch_idx)

    monkeypatch.setattr(SegmentationModule, "training_step", recording_step)
    cfg = tiny_config(tmp_path, scene_files)
    cfg["train"]["precision"] = "bf16-mixed"
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    res = train(load_config(p))
    assert res.bundle_path.is_file() and res.epochs == 1
    assert seen and all(on and dtype == torch.bfloat16 for on, dtype in seen)  # every step ran under bf16 autocast


def test_predict_reports_bad_files_and_keeps_going(tmp_path, scene_files):
    import yaml

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(tiny_config(tmp_path, scene_files)))
    b = train(load_config(p)).bundle_path
    four, _, _ = make_geotiff(tmp_path / "four.tif", 40, 40, bands=4)
    out = predict(b, [four, scene_files["test_image"]], tmp_path / "pred")
    assert list(out.failures) == [str(four)] and "4 bands" in out.failures[str(four)]
    assert str(scene_files["test_image"]) in out.outputs
