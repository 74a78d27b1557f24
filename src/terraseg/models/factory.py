"""Build segmentation networks from :class:`terraseg.config.ModelConfig`.

Architectures come from segmentation_models_pytorch (Iakubovskii, github.com/qubvel-org/
segmentation_models.pytorch): U-Net, DeepLabV3, DeepLabV3+, FPN, with any smp encoder; plus
:class:`~terraseg.models.plain_unet.PlainUNet`. Binary tasks get one output channel (sigmoid);
multi-class tasks one logit per class (softmax).
"""

from __future__ import annotations

import logging
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from terraseg.config import ModelConfig
from terraseg.errors import ConfigError
from terraseg.models.plain_unet import PlainUNet

log = logging.getLogger(__name__)

_SMP = {"unet": smp.Unet, "deeplabv3": smp.DeepLabV3, "deeplabv3plus": smp.DeepLabV3Plus, "fpn": smp.FPN}


def out_channels(num_classes: int) -> int:
    """Logit channels for a task: 1 for binary (two classes), else one per class.

    Args:
        num_classes: classes of the task, background included.
    """
    return 1 if num_classes == 2 else num_classes


def logits_to_probs(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(N, K, H, W)`` from logits ``(N, 1 or K, H, W)``.

    One channel means binary: ``p = sigmoid(z)`` and probabilities ``[1 - p, p]``.

    Args:
        logits: ``(N, 1 or K, H, W)`` float network output.
    """
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits.float())
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits.float(), dim=1)


def encoder_stages(model: nn.Module) -> list[nn.Module]:
    """The encoder of a segmentation network as an ordered list of stages, shallow to deep.

    smp encoders (ResNet ``conv1 / layer1..4``, timm EfficientNet ``conv_stem / blocks[i]``...) are split
    at their top-level children, with sequential containers of several blocks expanded into those blocks;
    a timm classifier's stages are its children other than the classification head.

    Args:
        model: a network built by :func:`build_model`.

    Returns:
        The stages (empty when the network has no separate encoder, e.g. ``plain_unet``).
    """
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, nn.Module):
        children = list(encoder.children())
    elif hasattr(model, "get_classifier"):  # a timm classifier: everything but its head
        head: nn.Module = model.get_classifier()  # type: ignore[operator]  # timm's classifier API
        children = [
            c for c in model.children() if c is not head and not any(p is q for p in c.parameters() for q in head.parameters())
        ]
    else:
        return []
    stages: list[nn.Module] = []
    for child in children:
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) > 1:
            stages.extend(child.children())
        elif any(p.numel() for p in child.parameters()):
            stages.append(child)
    return stages


def build_model(
    cfg: ModelConfig, in_channels: int, num_classes: int, load_pretrained: bool = True, band_names: list[str] | None = None
) -> nn.Module:
    """Create a network with random weights, or with pretrained encoder weights when configured.

    Args:
        cfg: architecture config.
        in_channels: input bands (any count).
        num_classes: classes of the task (2 = binary).
        load_pretrained: False when the caller will load a full state dict (bundles), so no
            encoder weights are fetched or read.
        band_names: the data's band names, in order: TorchGeo weights' bands are mapped onto them.

    Returns:
        A module mapping ``(N, in_channels, H, W)`` float32 to logits ``(N, out_channels, H, W)``.

    Raises:
        ConfigError: unknown encoder, or unusable pretrained weights.
    """
    if cfg.arch == "classifier":
        from terraseg.models.classifier import build_classifier

        return build_classifier(cfg, in_channels, num_classes, load_pretrained)
    out_ch = out_channels(num_classes)
    if cfg.arch == "plain_unet":
        return PlainUNet(in_channels, out_ch, depth=cfg.encoder_depth, base_filters=cfg.base_filters)
    weights = cfg.encoder_weights if load_pretrained else None
    if weights is not None and weights.startswith("torchgeo:"):
        return _torchgeo_model(cfg, in_channels, out_ch, band_names)
    if weights is not None and weights.startswith("package:"):
        from terraseg.models.pretrained import weights_in_package

        weights = str(weights_in_package(weights[len("package:") :]))
    local = weights is not None and (Path(weights).suffix in {".pth", ".pt", ".safetensors", ".bin"} or Path(weights).exists())
    try:
        model = _SMP[cfg.arch](**_smp_kwargs(cfg, in_channels, out_ch, None if local else weights))
    except KeyError as e:
        raise ConfigError(f"model.encoder: unknown encoder '{cfg.encoder}' ({e}).") from None
    except (OSError, ValueError, RuntimeError) as e:
        raise ConfigError(
            f"model.encoder_weights: cannot get '{weights}' weights for {cfg.encoder} ({str(e).splitlines()[0]})."
        ) from None
    if local:
        from terraseg.models.pretrained import load_encoder_weights

        load_encoder_weights(model.encoder, Path(weights), cfg.encoder)  # type: ignore[arg-type]
    return model


def _torchgeo_model(cfg: ModelConfig, in_channels: int, out_ch: int, band_names: list[str] | None) -> nn.Module:
    """An smp network whose encoder starts from TorchGeo's published weights (:mod:`terraseg.models.rs_weights`)."""
    from terraseg.models import rs_weights

    w = rs_weights.describe(cfg.encoder_weights or "")
    if cfg.encoder != w.encoder:
        raise ConfigError(
            f"model.encoder {cfg.encoder}: the weights {cfg.encoder_weights} are a {w.model}; set model.encoder: {w.encoder}."
        )
    if band_names is not None and len(band_names) != in_channels:
        raise ConfigError(f"data.band_names names {len(band_names)} bands but the images have {in_channels}.")
    path = rs_weights.weights_file(w, cfg.weights_file)
    model = _SMP[cfg.arch](**_smp_kwargs(cfg, in_channels, out_ch, None))
    rs_weights.load_into_encoder(model.encoder, w, path, band_names)
    return model


def _smp_kwargs(cfg: ModelConfig, in_channels: int, out_ch: int, weights: str | None) -> dict:
    """The keyword arguments of an smp architecture for a model config (hub ``weights`` name, or None)."""
    kwargs: dict = dict(encoder_name=cfg.encoder, encoder_weights=weights, in_channels=in_channels, classes=out_ch)
    if cfg.arch in ("unet", "fpn"):
        kwargs["encoder_depth"] = cfg.encoder_depth
        if cfg.arch == "unet":
            kwargs["decoder_channels"] = [256, 128, 64, 32, 16][: cfg.encoder_depth]
    return kwargs
