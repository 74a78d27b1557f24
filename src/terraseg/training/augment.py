"""Augmentation of whole training batches on the training device (the loader only reads windows).

Geometric transforms (a random affine per sample: zoom/scale, shear, rotation, by kornia; then the
D4 flips and 90-degree rotations) move image, mask and validity together: the image is resampled
bilinearly, mask and validity with nearest neighbours, and pixels that come from outside the window
become nodata (image 0, mask ``ignore_index``). Photometric transforms stay here: kornia's brightness
and contrast act on every band alike and assume images in [0, 1], while these act per band on
normalised values, as a multispectral sensor's calibration varies per band. Photometric
transforms act per band on the normalised image (brightness shift, contrast gain, gamma on the
band's range, Gaussian noise) and leave nodata pixels at 0. The parameters follow the systems
terraseg replaces: the roof-segmentation Keras generator used shear 0.2 (radians) and zoom 0.2 with
flips. Every draw comes from a generator seeded per (seed, epoch, step), so runs repeat.
"""

from __future__ import annotations

import math

import torch

from terraseg.config import AugmentConfig


def affine_batch(
    image: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor, cfg: AugmentConfig, ignore_index: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random zoom, shear and rotation per sample, applied alike to image, mask and validity (kornia).

    ``kornia.augmentation.RandomAffine`` inside ``AugmentationSequential`` (Riba et al., "Kornia: an
    open source differentiable computer vision library for PyTorch", WACV 2020; TorchGeo augments with
    it): the image is resampled bilinearly, the mask, the validity and a plane of ones with nearest
    neighbours; pixels that come from outside the window (the ones become 0) are nodata.

    Args:
        image: ``(N, C, H, W)`` float32 normalised images.
        mask: ``(N, H, W)`` int64 class ids.
        valid: ``(N, H, W)`` bool.
        cfg: the augmentation settings (``zoom``: scale in ``[1/(1+zoom), 1+zoom]``; ``shear`` in radians; ``rotate`` in
            degrees).
        ignore_index: mask value of unknown pixels.
        g: CPU generator for the parameters.

    Returns:
        The transformed ``(image, mask, valid)``; pixels from outside the window are nodata.
    """
    if cfg.p_affine == 0 or (cfg.zoom == 0 and cfg.shear == 0 and cfg.rotate == 0):
        return image, mask, valid
    import kornia.augmentation as K

    aug = K.AugmentationSequential(
        K.RandomAffine(
            degrees=cfg.rotate,
            scale=(1 / (1 + cfg.zoom), 1 + cfg.zoom) if cfg.zoom else None,
            shear=math.degrees(cfg.shear) if cfg.shear else None,
            padding_mode="zeros",
            align_corners=False,
            p=cfg.p_affine,
        ),
        data_keys=["input", "mask"],  # masks: nearest neighbours (kornia's default for the mask key)
    )
    planes = torch.stack([mask.to(image.dtype), valid.to(image.dtype), torch.ones_like(valid, dtype=image.dtype)], dim=1)
    # kornia draws its parameters from torch's global generator: under a seed drawn from ``g``, with the
    # global state given back after, so runs repeat and no other randomness moves
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        image, planes = aug(image, planes)
    valid = (planes[:, 1] > 0.5) & (planes[:, 2] > 0.5)
    mask = torch.where(valid, planes[:, 0].round().long(), torch.full_like(mask, ignore_index))
    image = image * valid[:, None]
    return image, mask, valid


def photometric_batch(image: torch.Tensor, valid: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Per-band brightness, contrast, gamma and Gaussian noise on normalised images; nodata stays 0.

    Args:
        image: ``(N, C, H, W)`` float32 normalised images.
        valid: ``(N, H, W)`` bool.
        cfg: the augmentation settings.
        g: CPU generator for the parameters.

    Returns:
        The transformed images (a new tensor).
    """
    n, c, dev = image.shape[0], image.shape[1], image.device
    hit = (torch.rand(n, generator=g) < cfg.p_photometric).to(dev)[:, None, None, None]
    x = image
    if cfg.contrast:
        gain = (torch.rand(n, c, generator=g) * 2 - 1) * cfg.contrast + 1
        x = x * gain.to(dev)[:, :, None, None]
    if cfg.brightness:
        shift = (torch.rand(n, c, generator=g) * 2 - 1) * cfg.brightness
        x = x + shift.to(dev)[:, :, None, None]
    if cfg.gamma:
        gam = torch.exp((torch.rand(n, c, generator=g) * 2 - 1) * math.log1p(cfg.gamma)).to(dev)[:, :, None, None]
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        span = (hi - lo).clamp_min(1e-6)
        x = ((x - lo) / span).clamp(0, 1).pow(gam) * span + lo
    if cfg.noise:
        x = x + torch.randn(x.shape, generator=g).to(dev) * cfg.noise
    x = torch.where(hit, x, image)
    return x * valid[:, None]


def d4_batch(
    image: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor, flips: str, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random flips (and, with ``flips='d4'``, 90-degree rotations) per sample, alike for image, mask, validity.

    Args:
        image: ``(N, C, H, W)``; mask, valid: ``(N, H, W)``.
        flips: 'd4' or 'horizontal'.
        g: CPU generator.

    Returns:
        The transformed ``(image, mask, valid)`` (square windows keep their size under rotation).
    """
    from terraseg.data import d4

    k, flip = d4.random_views(image.shape[0], flips, image.shape[-1] == image.shape[-2], g)
    out = [image.clone(), mask.clone(), valid.clone()]
    # one gather / transform / scatter per element of the group drawn (at most 8), not per sample
    for f in (False, True):
        for r in range(4):
            sel = torch.nonzero((flip == f) & (k == r)).flatten()  # CPU tensors: no device synchronisation
            if not len(sel) or (not f and not r):
                continue
            idx = sel.to(image.device)
            for o, t in zip(out, (image, mask, valid)):
                o[idx] = d4.apply(t[idx], (r, f))
    return out[0], out[1], out[2]


def augment_batch(batch: dict, cfg: AugmentConfig, flips: str, ignore_index: int, g: torch.Generator) -> dict:
    """Augment a training batch on its device: affine, D4 flips/rotations, photometric.

    Args:
        batch: sample dict with ``image`` ``(N, C, H, W)``, ``mask`` ``(N, H, W)``, ``valid`` ``(N, H, W)``.
        cfg: augmentation settings.
        flips: 'd4' or 'horizontal'.
        ignore_index: mask value of unknown pixels.
        g: CPU generator for the parameters (seeded by the caller).

    Returns:
        The batch with ``image``, ``mask`` and ``valid`` replaced.
    """
    image, mask, valid = batch["image"], batch["mask"], batch["valid"]
    image, mask, valid = affine_batch(image, mask, valid, cfg, ignore_index, g)
    image, mask, valid = d4_batch(image, mask, valid, flips, g)
    image = photometric_batch(image, valid, cfg, g)
    return batch | {"image": image, "mask": mask, "valid": valid}


__all__ = ["affine_batch", "augment_batch", "d4_batch", "photometric_batch"]
