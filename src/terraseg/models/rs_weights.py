"""Encoders pretrained on remote sensing: TorchGeo's published weights by name, their bands mapped onto the data's.

A config names the weights as ``model.encoder_weights: torchgeo:<Enum>.<MEMBER>``, e.g.
``torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO`` (SSL4EO-S12 MoCo on the 13 Sentinel-2 L1C bands; Wang et
al., "SSL4EO-S12", IEEE GRSM 2023, arXiv 2211.07044). TorchGeo (Stewart et al., "TorchGeo", ACM TSAS 2024;
https://torchgeo.readthedocs.io) is used as a library for the weights' metadata: the file's URL, the bands
in their order, the input normalisation (its ``Normalize`` transform) and the network they belong to.

Where the file comes from, in order: ``model.weights_file`` (a local copy the user names: no checksum to
check against), the cache folder's ``weights/<file name>``, torch hub's ``checkpoints/<file name>``; else,
online, a download into the cache folder with the SHA-256 prefix in the file name checked (torch hub's
convention); offline (``HF_HUB_OFFLINE=1`` or ``TERRASEG_OFFLINE=1``), one line names the file, its checksum
prefix and where to put it. Nothing is downloaded in tests.

The first convolution's input channels are reordered to the data's band order (``data.band_names``, else
the band descriptions of the training rasters; Sentinel-2 names compare without leading zeros and case:
B01 = B1, B8a = B8A). A data band the weights were not trained on is refused, and so is a band the weights
expect that the data lacks: TorchGeo's recipes do not say how to fill one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from terraseg.errors import ConfigError

log = logging.getLogger(__name__)
PREFIX = "torchgeo:"
# TorchGeo model names -> the smp encoder whose layout their state dicts share (torchvision/timm ResNets)
ENCODERS = {"resnet18": "resnet18", "resnet50": "resnet50"}


@dataclass(frozen=True)
class RemoteSensingWeights:
    """Published weights, as TorchGeo describes them.

    Attributes:
        name: ``<Enum>.<MEMBER>``.
        url: the file's URL.
        filename: its name (with the SHA-256 prefix, torch hub's convention).
        sha256_prefix: that prefix (or None).
        bands: band names in the order of the first convolution's channels.
        model: the network they belong to (``resnet18``...).
        mean: the input normalisation, in the data's units, one value per band.
        std: the input normalisation, in the data's units, one value per band.
        dataset: provenance.
        publication: provenance.
    """

    name: str
    url: str
    filename: str
    sha256_prefix: str | None
    bands: tuple[str, ...]
    model: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str = ""
    publication: str = ""

    @property
    def encoder(self) -> str:
        """The smp encoder name these weights load into.

        Raises:
            ConfigError: a network terraseg's segmentation encoders do not cover.
        """
        if self.model not in ENCODERS:
            raise ConfigError(
                f"model.encoder_weights {PREFIX}{self.name}: weights of a {self.model}; terraseg loads TorchGeo "
                f"weights into {', '.join(sorted(ENCODERS))} encoders."
            )
        return ENCODERS[self.model]


def describe(name: str) -> RemoteSensingWeights:
    """The metadata of TorchGeo weights named ``<Enum>.<MEMBER>`` (with or without the ``torchgeo:`` prefix).

    Args:
        name: e.g. ``ResNet18_Weights.SENTINEL2_ALL_MOCO``.

    Raises:
        ConfigError: TorchGeo not installed, an unknown name, or weights without band names.
    """
    name = name.removeprefix(PREFIX)
    try:
        from torchgeo.models import get_weight
    except ImportError:
        raise ConfigError(
            f"model.encoder_weights {PREFIX}{name}: needs TorchGeo for the weights' metadata "
            "(pip install 'terraseg[rs]' or torchgeo)."
        ) from None
    try:
        w = get_weight(name)
    except (KeyError, ValueError, AttributeError):
        raise ConfigError(
            f"model.encoder_weights {PREFIX}{name}: TorchGeo publishes no weights of that name "
            "(e.g. ResNet18_Weights.SENTINEL2_ALL_MOCO; torchgeo.models.list_models())."
        ) from None
    meta = dict(w.meta)
    bands = tuple(str(b) for b in meta.get("bands") or ())
    if not bands:
        raise ConfigError(
            f"model.encoder_weights {PREFIX}{name}: TorchGeo names no bands for these weights, so they cannot be "
            "mapped onto the data's bands."
        )
    mean, std = _normalisation(w.transforms, len(bands))
    filename = w.url.rsplit("/", 1)[-1]
    m = re.search(r"-([0-9a-f]{8,})\.\w+$", filename)
    return RemoteSensingWeights(
        name,
        w.url,
        filename,
        m.group(1) if m else None,
        bands,
        str(meta.get("model", "")),
        mean,
        std,
        str(meta.get("dataset", "")),
        str(meta.get("publication", "")),
    )


def _normalisation(transforms: object, bands: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per band from the weights' transforms (their Normalize step); ``(0, 1)`` without one."""
    modules = transforms.modules() if isinstance(transforms, nn.Module) else []
    for t in modules:
        if type(t).__name__ == "Normalize" and hasattr(t, "mean") and hasattr(t, "std"):
            mean = torch.as_tensor(t.mean, dtype=torch.float64).flatten().tolist()
            std = torch.as_tensor(t.std, dtype=torch.float64).flatten().tolist()
            mean = mean * bands if len(mean) == 1 else mean
            std = std * bands if len(std) == 1 else std
            if len(mean) == bands and len(std) == bands:
                return tuple(mean), tuple(std)
    return (0.0,) * bands, (1.0,) * bands


def band_key(name: str) -> str:
    """A band name compared without case and leading zeros: ``B01`` -> ``B1``, ``b8a`` -> ``B8A``, ``red`` -> ``RED``.

    Args:
        name: a band name.
    """
    n = name.strip().upper()
    m = re.fullmatch(r"B0*(\d+)(A?)", n)
    return f"B{m.group(1)}{m.group(2)}" if m else n


def band_order(weights: RemoteSensingWeights, data_bands: list[str] | None) -> list[int]:
    """For each data band, the index of the same band in the weights' first convolution.

    Args:
        weights: the weights' metadata.
        data_bands: the data's band names, in order.

    Returns:
        Channel indexes of the weights, one per data band.

    Raises:
        ConfigError: the data's bands are unnamed, a data band the weights do not have, or a weights band the data lacks.
    """
    if not data_bands:
        raise ConfigError(
            f"model.encoder_weights {PREFIX}{weights.name}: the data's bands have no names; give data.band_names "
            f"(these weights expect {', '.join(weights.bands)})."
        )
    have = {band_key(b): i for i, b in enumerate(weights.bands)}
    keys = [band_key(b) for b in data_bands]
    extra = [b for b, k in zip(data_bands, keys) if k not in have]
    if extra:
        raise ConfigError(
            f"model.encoder_weights {PREFIX}{weights.name}: band {', '.join(extra)} of the data is not one the "
            f"weights were trained on ({', '.join(weights.bands)}); leave it out of the inputs or train from scratch."
        )
    missing = [b for b in weights.bands if band_key(b) not in set(keys)]
    if missing:
        raise ConfigError(
            f"model.encoder_weights {PREFIX}{weights.name}: the data lacks band {', '.join(missing)} the weights "
            f"expect, and TorchGeo gives no recipe to fill it; give all of {', '.join(weights.bands)}, or "
            "other weights."
        )
    return [have[k] for k in keys]


def offline() -> bool:
    """Whether downloads are off (``HF_HUB_OFFLINE=1`` or ``TERRASEG_OFFLINE=1``)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TERRASEG_OFFLINE"))


def candidate_paths(weights: RemoteSensingWeights) -> list[Path]:
    """Where a copy of the weights is looked for: the cache folder's ``weights/``, then torch hub's ``checkpoints/``.

    Args:
        weights: the weights' metadata.
    """
    from terraseg.settings import cache_dir

    return [cache_dir() / "weights" / weights.filename, Path(torch.hub.get_dir()) / "checkpoints" / weights.filename]


def sha256_matches(path: Path, prefix: str | None) -> bool:
    """Whether the file's SHA-256 begins with ``prefix`` (True without a prefix to check).

    Args:
        path: the file.
        prefix: the hexadecimal prefix from the published file name.
    """
    if not prefix:
        return True
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest().startswith(prefix)


def find_file(weights: RemoteSensingWeights) -> Path | None:
    """A verified local copy of the weights (:func:`candidate_paths`), or None. A copy failing its checksum is skipped.

    Args:
        weights: the weights' metadata.
    """
    for p in candidate_paths(weights):
        if p.is_file():
            if sha256_matches(p, weights.sha256_prefix):
                return p
            log.warning("%s: SHA-256 does not begin with %s (a damaged or other file): not used", p, weights.sha256_prefix)
    return None


def weights_file(weights: RemoteSensingWeights, explicit: str | None = None) -> Path:
    """The weights file to load: the user's, a verified cached copy, or a download (online only).

    Args:
        weights: the weights' metadata.
        explicit: ``model.weights_file``, or None.

    Raises:
        ConfigError: the named file is missing; offline and no copy (one line: file, checksum, where to put it); a
            download that fails.
    """
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise ConfigError(
                f"model.weights_file {p}: not found (the local copy of {PREFIX}{weights.name}, {weights.filename})."
            )
        return p
    found = find_file(weights)
    if found is not None:
        return found
    target = candidate_paths(weights)[0]
    checksum = f"SHA-256 beginning {weights.sha256_prefix}" if weights.sha256_prefix else "no published checksum"
    if offline():
        raise ConfigError(
            f"{weights.filename} ({checksum}), the weights {PREFIX}{weights.name}, is not on this machine and "
            f"downloads are off: fetch {weights.url} and put it at {target} (or name it in model.weights_file)."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(weights.url, str(target), hash_prefix=weights.sha256_prefix, progress=False)
    except Exception as e:  # noqa: BLE001 - network errors, HTTP errors, a checksum mismatch
        raise ConfigError(
            f"{weights.url}: download failed ({str(e).splitlines()[0] if str(e) else type(e).__name__}); put "
            f"{weights.filename} ({checksum}) at {target}."
        ) from None
    return target


def load_into_encoder(encoder: nn.Module, weights: RemoteSensingWeights, path: Path, data_bands: list[str] | None) -> None:
    """Load the weights into an smp ResNet encoder, its first convolution's channels in the data's band order.

    Args:
        encoder: the smp encoder (``conv1`` first).
        weights: their metadata.
        path: the file.
        data_bands: the data's band names.

    Raises:
        ConfigError: bands that do not map (:func:`band_order`), a file that is not these weights, or too few tensors matched.
    """
    from terraseg.models.pretrained import load_encoder_state, read_state_dict

    order = band_order(weights, data_bands)
    sd = read_state_dict(path)
    sd = {k.removeprefix("module.").removeprefix("backbone.").removeprefix("encoder."): v for k, v in sd.items()}
    first = sd.get("conv1.weight")
    if first is None or first.ndim != 4 or first.shape[1] != len(weights.bands):
        got = "no conv1.weight" if first is None else f"conv1.weight of shape {tuple(first.shape)}"
        raise ConfigError(
            f"{path}: not the {PREFIX}{weights.name} weights ({got}; expected {len(weights.bands)} input channels)."
        )
    sd["conv1.weight"] = first[:, order].contiguous()
    load_encoder_state(encoder, sd, str(path))


__all__ = [
    "PREFIX",
    "RemoteSensingWeights",
    "band_key",
    "band_order",
    "candidate_paths",
    "describe",
    "find_file",
    "load_into_encoder",
    "offline",
    "sha256_matches",
    "weights_file",
]
