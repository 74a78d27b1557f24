"""Fine-tuning schedule: a frozen encoder, then all at once or one stage per epoch, with a lower encoder learning rate."""

import pytest
import torch

from terraseg.config import ExperimentConfig
from terraseg.models.factory import encoder_stages
from terraseg.training.module import SegmentationModule


def _task(**train):
    cfg = ExperimentConfig.model_validate(
        {
            "name": "ft",
            "classes": [{"name": "a"}, {"name": "b"}],
            "data": {"train": [{"kind": "scene", "image": "a.tif", "mask": "m.tif"}], "window": 64},
            "model": {"arch": "unet", "encoder": "resnet18", "encoder_depth": 3},
            "train": train,
            "optimizer": {"lr": 0.01},
        }
    )
    return SegmentationModule(cfg.model_dump(mode="json"), 3, 100)


def _frozen_flags(task):
    return [not any(p.requires_grad for p in s.parameters()) for s in encoder_stages(task.model)]


def test_progressive_unfreezing_deepest_first():
    task = _task(freeze_encoder_epochs=2, unfreeze="progressive", encoder_lr_ratio=0.1)
    n = len(encoder_stages(task.model))
    assert n >= 4
    assert task.apply_freeze(0) == n and all(_frozen_flags(task))
    assert task.apply_freeze(1) == n
    assert task.apply_freeze(2) == n - 1 and _frozen_flags(task) == [True] * (n - 1) + [False]
    assert task.apply_freeze(3) == n - 2 and _frozen_flags(task)[-2:] == [False, False]
    assert task.apply_freeze(2 + n) == 0 and not any(_frozen_flags(task))
    assert all(p.requires_grad for p in task.model.decoder.parameters())  # the decoder always trains
    opt = task.configure_optimizers()["optimizer"]
    assert [round(g["initial_lr"], 6) for g in opt.param_groups] == [0.001, 0.01]  # encoder at 0.1 x the peak lr


def test_all_at_once_and_frozen_batchnorm_stays_in_eval():
    task = _task(freeze_encoder_epochs=1)
    task.apply_freeze(0)
    task.model.train()
    task.on_train_batch_start(None, 0)
    bns = [m for s in encoder_stages(task.model) for m in s.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert task.apply_freeze(1) == 0 and not any(_frozen_flags(task))
    assert _task().apply_freeze(0) == 0  # no schedule: nothing frozen


@pytest.mark.slow
def test_training_keeps_a_frozen_encoder_unchanged(tmp_path, monkeypatch):
    import yaml

    from conftest import make_geotiff, tiny_config, write_mask_tif
    from terraseg.config import load_config
    from terraseg.training.run import train

    img, _, truth = make_geotiff(tmp_path / "a.tif", 96, 128, seed=1)
    files = {"image": img, "mask": write_mask_tif(tmp_path / "m.tif", truth, img), "test_image": img}
    files["test_mask"] = files["mask"]
    cfg = tiny_config(tmp_path, files)
    cfg["model"] = {"arch": "unet", "encoder": "resnet18", "encoder_depth": 3}
    cfg["train"] |= {"max_epochs": 2, "freeze_encoder_epochs": 1, "unfreeze": "all", "export_onnx": False}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    snaps = []

    def snap(self):
        snaps.append({k: v.detach().clone() for k, v in self.model.encoder.state_dict().items()})

    monkeypatch.setattr(SegmentationModule, "on_fit_start", snap, raising=False)
    monkeypatch.setattr(SegmentationModule, "on_train_epoch_end", snap, raising=False)
    train(load_config(p))
    start, after_frozen, after_free = snaps
    assert all(torch.equal(start[k], after_frozen[k]) for k in start)  # weights and BN statistics kept while frozen
    assert any(not torch.equal(after_frozen[k], after_free[k]) for k in start if k.endswith("weight"))  # then it trains
