"""Configs (validation, overrides, messages), bundle round trips, metric definitions."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
import yaml

from conftest import make_bundle
from terraseg.bundle import Bundle
from terraseg.config import load_config
from terraseg.data.normalize import NormStats
from terraseg.errors import BundleError, ConfigError
from terraseg.evaluation.metrics import confusion_matrix, metrics_from_confusion, score

BASE = {
    "name": "x",
    "classes": [{"name": "bg"}, {"name": "fg"}],
    "data": {"train": [{"kind": "scene", "image": "a.tif", "mask": "m.tif"}]},
}


def write(tmp_path, cfg) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def test_valid_config_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["train.max_epochs=3", "model.arch=deeplabv3plus", "data.window=128"])
    assert cfg.train.max_epochs == 3 and cfg.model.arch == "deeplabv3plus" and cfg.data.window == 128
    assert cfg.binary and cfg.model.encoder_weights is None  # never pretrained by default
    # YAML and --set read `precision: 32` as a number: taken as the text "32"; other numbers still refused
    assert load_config(write(tmp_path, BASE), ["train.precision=32"]).train.precision == "32"
    with pytest.raises(ConfigError, match="train.precision"):
        load_config(write(tmp_path, BASE), ["train.precision=64"])


@pytest.mark.parametrize(
    "mutate,expected",
    [
        (lambda c: c["data"].update(windw=64), "unknown field 'data.windw'"),
        (lambda c: c.update(train={"max_epochs": "many"}), "field 'train.max_epochs'"),
        (lambda c: c["data"].update(window=100), "multiple of 32"),
        (lambda c: c.pop("classes"), "missing required field 'classes'"),
        (lambda c: c.update(model={"arch": "transformer"}), "field 'model.arch'"),
        (lambda c: c.update(ignore_index=1), "collides with a class id"),
    ],
)
def test_bad_config_names_the_field(tmp_path, mutate, expected):
    cfg = yaml.safe_load(yaml.safe_dump(BASE))
    mutate(cfg)
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, cfg))
    assert expected in str(e.value) and "c.yaml" in str(e.value)


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(write(tmp_path, BASE), ["train.max_epochs"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")


def _bundle(in_ch=4, k=3) -> Bundle:
    stats = NormStats("meanstd", [1.0] * in_ch, [2.0] * in_ch, [0.0] * in_ch, [3.0] * in_ch)
    return make_bundle(bands=in_ch, classes=[f"c{i}" for i in range(k)], stats=stats, predict_window=256, dtype="uint16")


def test_bundle_round_trip_is_exact(tmp_path):
    b = _bundle()
    p = b.save(tmp_path / "m.terraseg")
    with zipfile.ZipFile(p) as z:
        assert set(z.namelist()) == {"manifest.json", "weights.safetensors"}  # data only, no pickle
    b2 = Bundle.load(p)
    x = torch.randn(2, 4, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(b.model(x), b2.model(x), rtol=0, atol=0)
    assert b2.stats == b.stats and b2.class_names == ["c0", "c1", "c2"] and b2.in_channels == 4


def test_bad_bundles(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        Bundle.load(tmp_path / "none.terraseg")
    junk = tmp_path / "junk.terraseg"
    junk.write_bytes(b"PK not really")
    with pytest.raises(BundleError, match="not a terraseg bundle"):
        Bundle.load(junk)
    p = _bundle().save(tmp_path / "m.terraseg")
    with zipfile.ZipFile(p) as z:
        manifest = z.read("manifest.json")
    bad = tmp_path / "bad.terraseg"
    with zipfile.ZipFile(bad, "w") as z:  # weights of another architecture
        z.writestr("manifest.json", manifest.replace(b'"base_filters": 4', b'"base_filters": 8'))
        z.writestr("weights.safetensors", zipfile.ZipFile(p).read("weights.safetensors"))
    with pytest.raises(BundleError, match="do not fit"):
        Bundle.load(bad)


def test_metrics_binary_are_positive_class_micro_averaged():
    # two images: the positive-class IoU is pooled over both, not averaged per image
    t1, p1 = np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0])
    t2, p2 = np.array([1, 0, 0, 255]), np.array([1, 1, 0, 1])
    cm = confusion_matrix(p1, t1, 2, 255) + confusion_matrix(p2, t2, 2, 255)
    m = metrics_from_confusion(cm, ["bg", "fg"])
    # pooled: TP=2, FP=1, FN=1 -> IoU 0.5, Dice 2/3
    assert m["iou"] == pytest.approx(0.5) and m["dice"] == pytest.approx(2 / 3)
    assert m["pixels"] == 7  # the ignore pixel is excluded
    assert m["per_class"]["bg"]["iou"] == pytest.approx(3 / 5)
    assert m["miou"] == pytest.approx((0.5 + 0.6) / 2)
    assert score(m) == pytest.approx(0.5)


def test_metrics_multiclass_absent_class_is_null_and_left_out():
    cm = confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 3, 255)
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    assert m["per_class"]["c"]["iou"] is None
    assert m["miou"] == pytest.approx((0.5 + 0.5) / 2)
    assert "iou" not in m and score(m) == pytest.approx(0.5)
