"""End to end through the CLI: train -> info -> evaluate -> predict, resume, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import rasterio
import yaml
from typer.testing import CliRunner

from conftest import DATA, make_geotiff, needs_data, tiny_config
from terraseg.cli.main import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny model trained through the CLI with MLflow tracking on, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("cli")
    from conftest import make_geotiff as mk
    from conftest import write_mask_tif

    img, _, truth = mk(tmp / "train.tif", 128, 160, seed=1)
    timg, _, ttruth = mk(tmp / "test.tif", 100, 140, seed=2)
    files = {
        "image": img,
        "mask": write_mask_tif(tmp / "train_mask.tif", truth, img),
        "test_image": timg,
        "test_mask": write_mask_tif(tmp / "test_mask.tif", ttruth, timg),
    }
    cfg = tiny_config(tmp, files)
    cfg["tracking"] = {"enabled": True}
    cfg["train"]["max_epochs"] = 2
    cpath = tmp / "tiny.yaml"
    cpath.write_text(yaml.safe_dump(cfg))
    res = run("train", cpath, "--set", "data.samples_per_epoch=8")
    assert res.exit_code == 0, res.output
    return {"tmp": tmp, "config": cpath, "bundle": tmp / "run" / "model.terraseg", "output": res.output, **files}


@pytest.mark.slow
def test_train_writes_bundle_and_tracks_run(trained):
    assert trained["bundle"].is_file()
    assert "bundle:" in trained["output"] and "val/score" in trained["output"]
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{trained['tmp'] / 'run' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    r = runs[0]
    assert r.data.params["model.arch"] == "plain_unet"
    assert len(client.get_metric_history(r.info.run_id, "val/score")) == 2  # per epoch
    arts = [a.path for a in client.list_artifacts(r.info.run_id)]
    assert "model.terraseg" in arts and "learning_curve.png" in arts  # the learning curve is kept
    assert (trained["tmp"] / "run" / "learning_curve.png").stat().st_size > 5000
    lr = [k for k in r.data.metrics if k.startswith("lr-")]
    assert lr and len(client.get_metric_history(r.info.run_id, lr[0])) == 2  # learning rate per epoch
    # evaluating the tracked bundle logs test metrics and files to its training run
    res = run(
        "evaluate", trained["bundle"], trained["test_image"], "--labels", trained["test_mask"], "--out", trained["tmp"] / "ev"
    )
    assert res.exit_code == 0, res.output
    assert f"logged to MLflow run {r.info.run_id}" in res.output
    run_ = client.get_run(r.info.run_id)
    assert "test/iou" in run_.data.metrics and "test/miou" in run_.data.metrics
    assert {"test/metrics.json", "test/confusion_matrix.png"} <= {a.path for a in client.list_artifacts(r.info.run_id, "test")}


def test_register_then_serve_from_registry(trained):
    """`terraseg register RUN --name X` creates a registry version; `models:/X@champion` then serves it."""
    from fastapi.testclient import TestClient

    from terraseg.serve.app import ServeConfig, create_app

    run_dir = trained["tmp"] / "run"
    res = run("register", run_dir, "--name", "tiny-buildings")
    assert res.exit_code == 0, res.output
    assert "models:/tiny-buildings@champion -> version 1" in res.output
    res = run("register", run_dir, "--name", "tiny-buildings", "--alias", "challenger")
    assert "version 2" in res.output
    uri = f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
    cfg = ServeConfig(models=["models:/tiny-buildings@champion", "models:/tiny-buildings/2"], tracking_uri=uri)
    with TestClient(create_app(cfg)) as c:
        models = c.get("/v1/models").json()
        assert [m["source"] for m in models] == cfg.models and models[0]["name"] != models[1]["name"]
        with open(trained["test_image"], "rb") as f:
            r = c.post(
                "/v1/segment", params={"format": "json", "model": models[0]["name"]}, files={"file": ("t.tif", f, "image/tiff")}
            )
        assert r.status_code == 200 and len(r.json()["mask"]) == 100  # the test image is 100 rows
    res = run("serve", "models:/tiny-buildings@nope", "--tracking-uri", uri)
    assert res.exit_code == 1 and "not found in the MLflow registry" in res.output


def test_register_into_a_store_without_the_run_carries_it_over(trained):
    """A bundle tracked in its run folder's sqlite store, registered in another store (a team's tracking
    server, as compose.yaml does): a new run there holds the bundle, its metrics and the source run id."""
    import mlflow

    from terraseg.bundle import Bundle
    from terraseg.tracking import resolve_model_uri

    run_dir = trained["tmp"] / "run"
    source = Bundle.load(run_dir / "model.terraseg").manifest
    store = f"sqlite:///{(trained['tmp'] / 'team.db').resolve()}"
    res = run("register", run_dir, "--name", "carried", "--tracking-uri", store)
    assert res.exit_code == 0, res.output
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    mv = client.get_model_version("carried", "1")
    r = client.get_run(mv.run_id)
    assert mv.run_id != source.training["mlflow_run_id"]
    assert r.data.tags["terraseg.source_run_id"] == source.training["mlflow_run_id"]
    assert r.data.metrics["val/score"] == source.metrics["validation"]["val/score"] and r.data.params["arch"] == source.model.arch
    got = Bundle.load(resolve_model_uri("models:/carried@champion", store))
    assert got.manifest.name == source.name and got.manifest.training["mlflow_run_id"] == source.training["mlflow_run_id"]
    res = run("register", run_dir, "--name", "carried", "--tracking-uri", store, "--run-id", "0" * 32)
    assert res.exit_code == 1 and "cannot register run" in res.output  # an explicit run must exist


def test_info_prints_bundle(trained):
    res = run("info", trained["bundle"], "--json")
    assert res.exit_code == 0
    info = json.loads(res.output)
    assert info["input"]["bands"] == 3 and [c["name"] for c in info["classes"]] == ["background", "object"]
    assert info["input"]["normalization"]["method"] == "meanstd" and len(info["input"]["normalization"]["mean"]) == 3
    assert run("info", trained["bundle"]).exit_code == 0


def test_evaluate_writes_metrics(trained):
    out = trained["tmp"] / "eval"
    res = run("evaluate", trained["bundle"], trained["test_image"], "--labels", trained["test_mask"], "--out", out)
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["pixels"] == 100 * 140
    assert set(m["per_class"]) == {"background", "object"}
    # reference IoU: the CLI's own prediction raster against the mask, counted here
    res = run("predict", trained["bundle"], trained["test_image"], "--out", trained["tmp"] / "eval-pred")
    assert res.exit_code == 0, res.output
    with rasterio.open(trained["tmp"] / "eval-pred" / "test.tif") as p, rasterio.open(trained["test_mask"]) as t:
        pred, truth = p.read(1) == 1, t.read(1) == 1
    union = int((pred | truth).sum())
    assert m["iou"] == pytest.approx(int((pred & truth).sum()) / union if union else 0.0)
    assert len(m["confusion_matrix"]) == 2 and (out / "confusion_matrix.png").is_file()
    assert list((out / "overlays").glob("*.png"))
    # the config's test split gives the same figures
    res = run("evaluate", trained["bundle"], trained["config"], "--out", trained["tmp"] / "eval2")
    assert res.exit_code == 0, res.output
    m2 = json.loads((trained["tmp"] / "eval2" / "metrics.json").read_text())
    assert m2["confusion_matrix"] == m["confusion_matrix"]


def test_predict_geotiff_and_png(trained, tmp_path):
    import numpy as np
    from PIL import Image

    png = tmp_path / "plain.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(png)
    out = tmp_path / "pred"
    res = run("predict", trained["bundle"], trained["test_image"], png, "--out", out, "--overlay")
    assert res.exit_code == 0, res.output
    with rasterio.open(trained["test_image"]) as s, rasterio.open(out / "test.tif") as p:
        assert (p.crs, p.transform, p.width, p.height) == (s.crs, s.transform, s.width, s.height)
        assert p.dtypes[0] == "uint8" and set(np.unique(p.read(1))) <= {0, 1}
    assert np.asarray(Image.open(out / "plain.png")).shape == (50, 70)
    assert (out / "test_overlay.png").is_file()


def test_resume_continues_from_last_checkpoint(trained):
    res = run("train", trained["config"], "--resume", "--set", "train.max_epochs=3")
    assert res.exit_code == 0, res.output
    assert "epochs: 3" in res.output
    from pathlib import Path

    import torch

    ckpts = Path(trained["bundle"]).parent / "checkpoints"
    # last.ckpt is the last epoch whatever the score did (it is what --resume reads); no versioned copies beside it
    assert torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 2
    assert sorted(f.name for f in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]


@pytest.mark.slow
@pytest.mark.integration  # the 'corrupt' case reads bad-inputs/corrupt.tif from the data root
@pytest.mark.parametrize("case", ["wrong_bands", "missing", "corrupt", "bad_config", "no_overlap"])
def test_bad_input_one_sentence_nonzero_exit(trained, tmp_path, case):
    out = tmp_path / "o"
    if case == "wrong_bands":
        four, _, _ = make_geotiff(tmp_path / "four.tif", 40, 40, bands=4)
        args = ["predict", trained["bundle"], four, "--out", out]
        expect = "4 bands but the model expects 3"
    elif case == "missing":
        args = ["predict", trained["bundle"], tmp_path / "nope.tif", "--out", out]
        expect = "nope.tif: file not found"
    elif case == "corrupt":
        if not (DATA / "bad-inputs" / "corrupt.tif").exists():
            pytest.skip("real data not available")
        args = ["predict", trained["bundle"], DATA / "bad-inputs" / "corrupt.tif", "--out", out]
        expect = "corrupt.tif: pixel data cannot be read"
    elif case == "bad_config":
        cfg = yaml.safe_load(trained["config"].read_text())
        cfg["train"]["max_epoch"] = 3
        p = tmp_path / "bad.yaml"
        p.write_text(yaml.safe_dump(cfg))
        args = ["train", p]
        expect = "unknown field 'train.max_epoch'"
    else:
        import geopandas as gpd
        from shapely.geometry import box

        gpd.GeoDataFrame(geometry=[box(10, 10, 11, 11)], crs="EPSG:4326").to_file(tmp_path / "far.geojson", driver="GeoJSON")
        args = ["evaluate", trained["bundle"], trained["test_image"], "--labels", tmp_path / "far.geojson", "--out", out]
        expect = "no overlap"
    # a real process, to see exactly what a user sees on stderr
    proc = subprocess.run([sys.executable, "-m", "terraseg.cli.main", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert expect in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len([x for x in proc.stderr.splitlines() if x.startswith("error:")]) == 1
    assert not out.exists() or not any(p.name.endswith(".tif") for p in out.iterdir())


@pytest.mark.slow
@needs_data("massachusetts-buildings", "massachusetts_buildings.zip")
def test_real_massachusetts_train_predict_georeferenced(tmp_path):
    """Integration: 1 short epoch on the real tile; the prediction overlays the unseen uint16 tile exactly."""
    cfg = yaml.safe_load(open("configs/massachusetts-buildings.yaml"))
    cfg["output_dir"] = str(tmp_path / "run")
    cfg["tracking"] = {"enabled": False}
    cfg["model"] = {"arch": "unet", "encoder": "resnet18", "encoder_depth": 3}
    cfg["data"].update(samples_per_epoch=4, batch_size=4, window=128)
    cfg["train"] = {"max_epochs": 1, "export_onnx": False}  # the grid and nodata of the map are under test here
    p = tmp_path / "mb.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert run("train", p).exit_code == 0
    tile = DATA / "massachusetts-buildings" / "23429155_15.tif"
    runtime = ["--backend", "torch", "--precision", "32", "--no-channels-last"]
    res = run("predict", tmp_path / "run" / "model.terraseg", tile, "--out", tmp_path / "pred", "--window", "256", *runtime)
    assert res.exit_code == 0, res.output
    with rasterio.open(tile) as s, rasterio.open(tmp_path / "pred" / "23429155_15.tif") as o:
        assert (o.crs, o.transform, o.width, o.height) == (s.crs, s.transform, s.width, s.height)
        assert o.crs.to_epsg() == 26986
        nod = (s.read() == 255).all(axis=0)
        assert ((o.read(1) == 255) == nod).all()  # nodata kept exactly where the input has it


@pytest.mark.slow
def test_register_takes_the_run_of_its_folder_and_the_bundle_as_it_is_now(tmp_path):
    """Two runs in one tracking store: `register RUN_DIR` registers that folder's run, with its current bundle."""
    import mlflow

    from conftest import make_geotiff as mk
    from conftest import write_mask_tif
    from terraseg.bundle import Bundle
    from terraseg.tracking import resolve_model_uri

    img, _, truth = mk(tmp_path / "a.tif", 96, 96, seed=3)
    files = {"image": img, "mask": write_mask_tif(tmp_path / "m.tif", truth, img), "test_image": img}
    files["test_mask"] = files["mask"]
    store = f"sqlite:///{(tmp_path / 'shared.db').resolve()}"
    dirs = {}
    for name in ("first", "second"):  # the second run is the newest of the store
        cfg = tiny_config(tmp_path, files)
        cfg |= {"name": name, "output_dir": str(tmp_path / name), "tracking": {"enabled": True, "tracking_uri": store}}
        p = tmp_path / f"{name}.yaml"
        p.write_text(yaml.safe_dump(cfg))
        assert run("train", p).exit_code == 0
        dirs[name] = tmp_path / name
    b = Bundle.load(dirs["first"] / "model.terraseg")
    first_run = b.manifest.training["mlflow_run_id"]
    b.manifest.exports["note"] = {"added": "after training"}  # the bundle changes after training (as `export` does)
    b.save(dirs["first"] / "model.terraseg")
    res = run("register", dirs["first"], "--name", "floods", "--tracking-uri", store)
    assert res.exit_code == 0, res.output
    mv = mlflow.MlflowClient(tracking_uri=store, registry_uri=store).get_model_version("floods", "1")
    assert mv.run_id == first_run
    got = Bundle.load(resolve_model_uri("models:/floods@champion", store))
    assert got.manifest.name == "first" and got.manifest.exports["note"] == {"added": "after training"}
    res = run("register", dirs["first"], "--name", "floods", "--tracking-uri", store, "--run-id", "0" * 32)
    assert res.exit_code == 1 and "cannot register run" in res.output


@pytest.mark.slow
def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    """`terraseg mosaic --cog` killed with SIGTERM leaves no temporary (.part) file and exits 143."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import make_geotiff as mk

    tile, _, _ = mk(tmp_path / "big.tif", 6000, 6000, squares=False)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "terraseg", "mosaic", str(tile), "--out", str(out / "m.tif"), "--cog"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".m.") for p in out.iterdir()):
        time.sleep(0.05)  # wait until it is writing its temporary file
    assert any(p.name.startswith(".m.") for p in out.iterdir()), "mosaic never started writing"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in stderr and "Traceback" not in stderr
    assert list(out.iterdir()) == []  # neither the result nor a .part file


@pytest.mark.slow
def test_predict_refuses_grid_for_a_segmentation_bundle(trained, tmp_path):
    res = run("predict", trained["bundle"], trained["test_image"], "--out", tmp_path / "o", "--grid")
    assert (
        res.exit_code == 1
        and "--grid applies to classification of image files and classification with --grid; this bundle segments" in res.output
    ), res.output
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


@pytest.mark.slow
def test_python_evaluate_of_the_val_split_scores_the_pixels_the_command_does(trained, tmp_path):
    from terraseg import evaluate

    res = run("evaluate", trained["bundle"], "--split", "val", "--out", tmp_path / "cli", "--no-log-to-run")
    assert res.exit_code == 0, res.output
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    py = evaluate(trained["bundle"], split="val", out_dir=tmp_path / "py", log_to_run=False)
    assert py["pixels"] == cli["pixels"] > 0 and py["confusion_matrix"] == cli["confusion_matrix"]
    assert py["intervals"]["unit"] == "scenes"  # the held-out blocks are the units, as in training
    assert py["intervals"] == cli["intervals"]
