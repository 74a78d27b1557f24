"""Which epoch's network a run keeps (train.keep): the best by validation only when validation can tell it apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_geotiff, tiny_config, write_mask_tif
from terraseg.config import ExperimentConfig
from terraseg.training.network import keep_epoch, train_network


def _units(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: int = 10_000) -> np.ndarray:
    """``(U, 2, 2)`` confusion matrices (rows truth, columns prediction) from per-unit building counts."""
    return np.stack([np.array([[tn, f], [n, t]], dtype=np.int64) for t, f, n in zip(tp, fp, fn)])


BEST = {"epoch": 3, "val/score": 0.56}
LAST = {"epoch": 15, "val/score": 0.52}


def test_auto_keeps_the_last_network_when_validation_cannot_tell_the_two_apart():
    rng = np.random.default_rng(0)
    tp = rng.integers(100, 1000, 20)
    best = _units(tp, rng.integers(50, 600, 20), rng.integers(50, 600, 20))
    # the last epoch: better on some blocks, worse on others, a little worse in all
    last = _units(tp, best[:, 0, 1] + rng.integers(-150, 170, 20), best[:, 1, 0] + rng.integers(-150, 170, 20))
    which, why = keep_epoch("auto", BEST, LAST, {"best": best, "last": last})
    assert which == "last" and "epoch 16" in why and "cannot tell" in why and "over 20 validation units" in why


def test_auto_keeps_the_best_network_when_validation_separates_it():
    tp = np.full(20, 800)
    best = _units(tp, np.full(20, 100), np.full(20, 100))
    last = _units(tp - 300, np.full(20, 400), np.full(20, 400))  # worse on every block
    which, why = keep_epoch("auto", BEST, LAST, {"best": best, "last": last})
    assert which == "best" and "epoch 4" in why and "separates" in why


def test_explicit_choices_one_epoch_and_missing_units():
    units = {
        "best": _units(np.full(3, 5), np.full(3, 5), np.full(3, 5)),
        "last": _units(np.full(3, 5), np.full(3, 5), np.full(3, 5)),
    }
    assert keep_epoch("best", BEST, LAST, units) == ("best", None)
    which, why = keep_epoch("last", BEST, LAST, {})
    assert which == "last" and "train.keep last" in why
    assert keep_epoch("auto", BEST, dict(BEST), units) == ("best", None)  # the best is the last epoch
    assert keep_epoch("auto", BEST, LAST, {}) == ("best", None)  # DDP or classification: no units to pair
    assert keep_epoch("auto", {}, {}, units) == ("best", None)  # no validation


@pytest.mark.slow
@pytest.mark.parametrize("keep", ["last", "best"])
def test_the_bundle_holds_the_kept_epochs_weights_and_figures(tmp_path, keep):
    from terraseg.bundle import Bundle

    img, _, truth = make_geotiff(tmp_path / "train.tif", 128, 160, seed=1)
    timg, _, ttruth = make_geotiff(tmp_path / "test.tif", 64, 64, seed=2)
    files = {
        "image": img,
        "mask": write_mask_tif(tmp_path / "m.tif", truth, img),
        "test_image": timg,
        "test_mask": write_mask_tif(tmp_path / "tm.tif", ttruth, timg),
    }
    cfg = ExperimentConfig.model_validate(tiny_config(tmp_path, files, train={"max_epochs": 3, "seed": 0, "keep": keep}))
    res = train_network(cfg)
    b = Bundle.load(res.bundle_path)
    ckpts = res.run_dir / "checkpoints"
    last_epoch = res.history[-1]["epoch"]
    best_epoch = max(res.history, key=lambda h: h["val/score"])["epoch"]  # the first of equal scores: Lightning's best
    kept = ckpts / ("last.ckpt" if keep == "last" else "best.ckpt")
    state = torch.load(kept, map_location="cpu", weights_only=True)["state_dict"]
    for k, v in b.model.state_dict().items():
        torch.testing.assert_close(v, state["model." + k])
    assert b.manifest.metrics["validation"]["epoch"] == (last_epoch if keep == "last" else best_epoch)
    assert res.best["epoch"] == b.manifest.metrics["validation"]["epoch"]
    if keep == "last" and best_epoch != last_epoch:
        assert "train.keep last" in (res.kept or "") and b.manifest.training["kept"] == res.kept
    if keep == "best":
        assert res.kept is None
