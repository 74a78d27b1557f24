"""Encoders pretrained on remote sensing: TorchGeo's weights by name, bands mapped, chosen by the plan.

The checkpoints are generated here in the published format (a timm ResNet state dict with one input channel
per band, as TorchGeo's SSL4EO-S12 files are); nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from typer.testing import CliRunner

from conftest import DATA, needs_data
from terraseg.cli.main import app
from terraseg.errors import ConfigError

pytest.importorskip("torchgeo")
from terraseg.models import rs_weights  # noqa: E402

NAME = "ResNet18_Weights.SENTINEL2_ALL_MOCO"
S2 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]


def checkpoint(path, bands: int = 13, seed: int = 0):
    """A ResNet18 state dict shaped as TorchGeo's SSL4EO-S12 file (timm names, ``bands`` input channels)."""
    import timm

    torch.manual_seed(seed)
    sd = timm.create_model("resnet18", in_chans=bands, num_classes=0).state_dict()
    torch.save(sd, path)
    return sd


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TERRASEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_metadata_comes_from_torchgeo():
    w = rs_weights.describe(f"torchgeo:{NAME}")
    assert w.model == "resnet18" and w.encoder == "resnet18" and len(w.bands) == 13
    assert [rs_weights.band_key(b) for b in w.bands] == S2
    assert set(w.mean) == {0.0} and set(w.std) == {10000.0}  # SSL4EO-S12: reflectance x 1e4, divided back
    assert w.filename.endswith(".pth") and w.sha256_prefix == "59bfdff9" and w.url.startswith("https://")
    with pytest.raises(ConfigError, match="publishes no weights of that name"):
        rs_weights.describe("ResNet18_Weights.NOPE")


def test_band_mapping_reorders_the_first_convolution(tmp_path):
    import segmentation_models_pytorch as smp

    sd = checkpoint(tmp_path / "w.pth")
    w = rs_weights.describe(NAME)
    data = [
        "B04",
        "B03",
        "B02",
        "B01",
        "B05",
        "B06",
        "B07",
        "B08",
        "B8a",
        "B09",
        "B10",
        "B11",
        "B12",
    ]  # another order, other spelling
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=13, classes=1)
    rs_weights.load_into_encoder(model.encoder, w, tmp_path / "w.pth", data)
    got, src = model.encoder.conv1.weight.detach(), sd["conv1.weight"]
    for j, name in enumerate(data):
        i = S2.index(rs_weights.band_key(name))
        torch.testing.assert_close(got[:, j], src[:, i])
    torch.testing.assert_close(model.encoder.layer4[1].conv2.weight.detach(), sd["layer4.1.conv2.weight"])


def test_bands_that_do_not_map_are_refused_in_one_line(tmp_path):
    checkpoint(tmp_path / "w.pth")
    w = rs_weights.describe(NAME)
    with pytest.raises(ConfigError, match="band NIR2 of the data is not one the weights were trained on") as e:
        rs_weights.band_order(w, S2[:12] + ["NIR2"])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="the data lacks band B10 the weights expect"):
        rs_weights.band_order(w, [b for b in S2 if b != "B10"])
    with pytest.raises(ConfigError, match="give data.band_names"):
        rs_weights.band_order(w, None)


def test_a_missing_file_offline_names_the_file_its_checksum_and_where_to_put_it(tmp_path):
    w = rs_weights.describe(NAME)
    with pytest.raises(ConfigError) as e:
        rs_weights.weights_file(w)
    msg = str(e.value)
    assert "\n" not in msg and w.filename in msg and "59bfdff9" in msg and w.url in msg
    assert str(tmp_path / "cache" / "weights" / w.filename) in msg
    with pytest.raises(ConfigError, match="model.weights_file .*not found"):
        rs_weights.weights_file(w, str(tmp_path / "nowhere.pth"))
    # a file under the published name whose checksum does not match is not used
    target = tmp_path / "cache" / "weights" / w.filename
    target.parent.mkdir(parents=True)
    checkpoint(target)
    assert rs_weights.find_file(w) is None


def _s2_scene(tmp_path):
    rng = np.random.default_rng(0)
    h = w = 96
    img = rng.integers(200, 3000, (13, h, w)).astype("int16")
    truth = np.zeros((h, w), np.uint8)
    truth[20:60, 30:80] = 1
    img[:, truth == 1] //= 4  # water is dark
    prof = dict(
        driver="GTiff",
        width=w,
        height=h,
        count=13,
        dtype="int16",
        crs="EPSG:32630",
        transform=from_origin(600000, 4500000, 10, 10),
    )
    with rasterio.open(tmp_path / "s2.tif", "w", **prof) as d:
        d.write(img)
        d.descriptions = tuple(S2)
    with rasterio.open(tmp_path / "label.tif", "w", **(prof | dict(count=1, dtype="uint8"))) as d:
        d.write(truth, 1)
    return tmp_path / "s2.tif", tmp_path / "label.tif"


def test_the_plan_picks_the_ssl4eo_encoder_when_its_file_is_here_and_the_packaged_one_when_not(tmp_path, monkeypatch):
    import yaml

    img, label = _s2_scene(tmp_path)
    res = CliRunner().invoke(app, ["plan", str(img), "--labels", str(label), "--no-measure", "--out", str(tmp_path / "a.yaml")])
    assert res.exit_code == 0, res.output
    plan = yaml.safe_load((tmp_path / "a.yaml").read_text())
    assert not str(plan["model"].get("encoder_weights") or "").startswith("torchgeo:")
    w = rs_weights.describe(NAME)
    assert w.filename in res.output  # the note says which file would make the plan use them
    target = tmp_path / "cache" / "weights" / w.filename
    target.parent.mkdir(parents=True)
    checkpoint(target)
    monkeypatch.setattr(rs_weights, "sha256_matches", lambda path, prefix: True)  # a generated file, not the published bytes
    res = CliRunner().invoke(app, ["plan", str(img), "--labels", str(label), "--no-measure", "--out", str(tmp_path / "b.yaml")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "b.yaml").read_text()
    plan = yaml.safe_load(text)
    assert plan["model"]["encoder_weights"] == f"torchgeo:{NAME}" and plan["model"]["encoder"] == "resnet18"
    assert plan["data"]["normalization"]["std"] == [10000.0] * 13 and "SSL4EO-S12" in text  # the reason is in plan.yaml


@needs_data("sen1floods11", "S2")
def test_train_one_epoch_on_sen1floods11_from_a_local_ssl4eo_file(tmp_path):
    import yaml

    from conftest import shipped_config
    from terraseg.bundle import Bundle

    checkpoint(tmp_path / "ssl4eo.pth")

    def edit(cfg):
        cfg["model"] = {
            "arch": "unet",
            "encoder": "resnet18",
            "encoder_weights": f"torchgeo:{NAME}",
            "weights_file": str(tmp_path / "ssl4eo.pth"),
        }
        cfg["data"]["normalization"] = {"method": "meanstd", "mean": [0.0], "std": [10000.0]}
        cfg["data"]["samples_per_epoch"] = 16
        cfg["train"] = {"max_epochs": 1, "export_onnx": False, "calibrate": False, "choose_tiling": False}

    path = shipped_config("sen1floods11-unet", tmp_path, edit)
    res = CliRunner().invoke(app, ["train", str(path)])
    assert res.exit_code == 0, res.output
    b = Bundle.load(yaml.safe_load(path.read_text())["output_dir"] + "/model.terraseg")
    assert b.manifest.input.normalization.std == [10000.0] * 13 and b.manifest.input.band_names[8] == "B8A"
    assert b.manifest.model.encoder_weights == f"torchgeo:{NAME}"
    assert DATA.exists()
