"""`terraseg tune`: Optuna search over a config's tune section, pruning, resume, nested MLflow runs."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from conftest import make_geotiff, tiny_config, write_mask_tif
from terraseg.cli.main import app
from terraseg.config import load_config
from terraseg.errors import ConfigError
from terraseg.training.tune import tune


@pytest.fixture(scope="module")
def cfg_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    img, _, truth = make_geotiff(tmp / "train.tif", 128, 128, seed=1)
    timg, _, ttruth = make_geotiff(tmp / "test.tif", 96, 96, seed=2)
    files = {
        "image": img,
        "mask": write_mask_tif(tmp / "m.tif", truth, img),
        "test_image": timg,
        "test_mask": write_mask_tif(tmp / "tm.tif", ttruth, timg),
    }
    cfg = tiny_config(tmp, files)
    cfg["train"] |= {"max_epochs": 3, "export_onnx": False}
    cfg["tracking"] = {"enabled": True}
    cfg["tune"] = {
        "params": {
            "optimizer.lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
            "model.base_filters": {"type": "categorical", "choices": [4, 8]},
        },
        "pruner": "median",
        "startup_trials": 1,
    }
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_tune_runs_prunes_or_finishes_resumes_and_writes_the_best(cfg_path):
    res = tune(cfg_path, trials=3)
    assert res.trials == 3 and res.finished + res.pruned == 3 and res.finished >= 1
    best = load_config(res.best_config)  # a config a user can train from
    assert best.optimizer.lr == pytest.approx(res.best_params["optimizer.lr"])
    assert res.best_bundle.is_file() and 0 <= res.best_value <= 1
    import optuna

    study = optuna.load_study(study_name="tiny", storage=res.storage)
    base = load_config(cfg_path)
    assert study.trials[0].params == {
        "optimizer.lr": base.optimizer.lr,
        "model.base_filters": base.model.base_filters,
    }  # the baseline
    again = tune(cfg_path, trials=1)  # the study is in its database: a new call adds to it
    assert again.trials == 4
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{res.study_dir / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("terraseg_study")]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 4  # one study run, each trial nested under it
    assert "best/val_score" in parents[0].data.metrics


def test_tune_bad_space_is_one_line_error_before_any_trial(cfg_path, tmp_path):
    raw = yaml.safe_load(cfg_path.read_text())
    for params, words in (
        (({"optimizer.nope": {"type": "float", "low": 0.1, "high": 0.2}}), "tune.params.optimizer.nope"),
        ({"optimizer.lr": {"type": "float", "low": 0.1, "high": 0.1}}, "empty range"),
        ({}, "no `tune.params`"),
    ):
        raw["tune"]["params"] = params
        raw["output_dir"] = str(tmp_path / "never")
        p = tmp_path / "bad.yaml"
        p.write_text(yaml.safe_dump(raw))
        r = CliRunner().invoke(app, ["tune", str(p), "--trials", "1"])
        assert r.exit_code == 1 and words in r.output, r.output
        assert not (tmp_path / "never" / "tune" / "trial-000").exists()
    with pytest.raises(ConfigError):
        raw["tune"]["params"] = {"data.window": {"type": "int", "low": 5, "high": 3}}
        p.write_text(yaml.safe_dump(raw))
        tune(p, trials=1)


@pytest.mark.slow
def test_tune_a_pixel_baseline_config(tmp_path):
    """Pixel baselines (scikit-learn) are tuned too: one fit per trial, no epochs to prune, best config and bundle written."""
    img, _, truth = make_geotiff(tmp_path / "train.tif", 96, 96, seed=5)
    files = {
        "image": img,
        "mask": write_mask_tif(tmp_path / "m.tif", truth, img),
        "test_image": img,
        "test_mask": tmp_path / "m.tif",
    }
    cfg = tiny_config(tmp_path, files, model={"arch": "random_forest"}, baseline={"samples_per_class": 300, "n_estimators": 10})
    cfg["data"]["val_fraction"] = 0.3
    cfg["tune"] = {
        "params": {
            "baseline.n_estimators": {"type": "int", "low": 5, "high": 30},
            "baseline.texture_window": {"type": "categorical", "choices": [3, 5]},
        }
    }
    path = tmp_path / "rf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = tune(path, trials=3)
    assert res.finished == 3 and res.best_value is not None and 0.0 <= res.best_value <= 1.0
    best = load_config(res.best_config)
    assert best.model.arch == "random_forest" and 5 <= best.baseline.n_estimators <= 30
    assert res.best_bundle is not None and res.best_bundle.exists()
