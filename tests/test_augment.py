"""Batch augmentation on the device: image, mask and nodata move together."""

import torch

from terraseg.config import AugmentConfig
from terraseg.training.augment import augment_batch, d4_batch, photometric_batch


def _batch(n=6, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, size // 8, size // 8, generator=g) > 0.5).long().repeat_interleave(8, 1).repeat_interleave(8, 2)
    image = torch.cat([mask[:, None].float(), torch.rand(n, 2, size, size, generator=g)], dim=1)  # band 0 = the mask
    valid = torch.ones(n, size, size, dtype=torch.bool)
    valid[:, :, :5] = False  # a nodata strip
    mask[~valid] = 255
    image = image * valid[:, None]
    return {"image": image, "mask": mask, "valid": valid}


def test_affine_moves_image_mask_and_nodata_together():
    cfg = AugmentConfig(zoom=0.3, shear=0.2, rotate=30, p_affine=1.0, p_photometric=0.0)
    b = _batch()
    out = augment_batch(dict(b), cfg, "d4", 255, torch.Generator().manual_seed(1))
    img, mask, valid = out["image"], out["mask"], out["valid"]
    assert img.shape == b["image"].shape and mask.shape == b["mask"].shape and mask.dtype == torch.int64
    assert not torch.equal(mask, b["mask"])  # something moved
    assert (~valid).any() and (mask[~valid] == 255).all()  # pixels from outside the window or nodata: ignored
    assert (img.permute(1, 0, 2, 3)[:, ~valid] == 0).all()  # nodata stays nodata in every band
    known = valid & (mask != 255)
    agree = ((img[:, 0] > 0.5).long() == mask)[known].float().mean()
    assert agree > 0.97, agree  # bilinear image and nearest mask stay aligned (edges may differ by a pixel)
    assert set(torch.unique(mask).tolist()) <= {0, 1, 255}


def test_d4_is_exact_and_photometric_keeps_nodata():
    b = _batch(seed=3)
    img, mask, valid = d4_batch(b["image"], b["mask"], b["valid"], "d4", torch.Generator().manual_seed(0))
    known = mask != 255
    assert torch.equal(img[:, 0][known].long(), mask[known])  # exact: no resampling
    cfg = AugmentConfig(brightness=0.5, contrast=0.5, gamma=0.5, noise=0.1, p_photometric=1.0)
    x = photometric_batch(img, valid, cfg, torch.Generator().manual_seed(0))
    assert not torch.allclose(x, img) and (x.permute(1, 0, 2, 3)[:, ~valid] == 0).all()


def test_affine_repeats_with_its_generator_and_leaves_the_global_one_alone():
    cfg = AugmentConfig(zoom=0.3, shear=0.2, rotate=30, p_affine=1.0, p_photometric=0.0)
    b = _batch(seed=5)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    one = augment_batch(dict(b), cfg, "d4", 255, torch.Generator().manual_seed(7))
    assert torch.equal(torch.random.get_rng_state(), before)  # kornia drew under its own seed
    two = augment_batch(dict(b), cfg, "d4", 255, torch.Generator().manual_seed(7))
    other = augment_batch(dict(b), cfg, "d4", 255, torch.Generator().manual_seed(8))
    assert torch.equal(one["mask"], two["mask"]) and torch.equal(one["image"], two["image"])
    assert not torch.equal(one["mask"], other["mask"])
