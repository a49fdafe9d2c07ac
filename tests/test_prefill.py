"""Pyramid pre-fill and residual output: exact known pixels, no hole left, start from the pre-fill, then improve."""

from __future__ import annotations

import itertools

import pytest
import torch

from data.corrupt import Corruption, apply_mask, random_masks
from data.images import ImageSet, fixed_masks
from models.prefill import pyramid_fill
from models.unet import UNet, UNetConfig
from search.core.train import corruption_of, train


@pytest.mark.parametrize(("n_holes", "hole", "size"), [(4, 32, 256), (1, 1, 64), (12, 20, 64), (3, 60, 64),
                                                       (4, 16, 50)])
def test_prefill_keeps_known_pixels_and_fills_every_hole(n_holes, hole, size):
    torch.manual_seed(0)
    image = torch.rand(3, 3, size, size)
    mask = random_masks(Corruption(n_holes, hole, max(size, hole)), 3, size)
    masked = image * (1 - mask)
    filled = pyramid_fill(masked, mask)
    known = mask.expand_as(image) == 0
    assert torch.equal(filled[known], image[known])
    assert torch.isfinite(filled).all()
    # Every hole pixel gets a value from its surroundings: inside the range of the image, never left black.
    holes = ~known
    assert (filled[holes] > 0).all() and (filled[holes] <= 1).all()


def test_prefill_reproduces_a_constant_image():
    image = torch.full((2, 3, 64, 64), 0.37)
    mask = random_masks(Corruption(8, 24, 64), 2, 64)
    assert torch.allclose(pyramid_fill(image * (1 - mask), mask), image, atol=1e-6)


def test_prefill_beats_mean_fill_on_real_images(small_images):
    image = small_images.batch(list(range(8)))
    mask = random_masks(Corruption(4, 8, 64), 8, 64, generator=torch.Generator().manual_seed(0))
    filled = pyramid_fill(image * (1 - mask), mask)
    hole_err = ((filled - image).abs() * mask).sum() / (mask.sum() * 3)
    mean_err = ((image.mean(dim=(2, 3), keepdim=True) - image).abs() * mask).sum() / (mask.sum() * 3)
    assert hole_err < mean_err


@pytest.mark.parametrize(("prefill", "residual", "upsample", "norm"),
                         list(itertools.product(("none", "pyramid"), (False, True), ("transpose", "bilinear"),
                                                ("none", "group"))))
def test_prefill_and_residual_work_with_other_options(prefill, residual, upsample, norm):
    model = UNet(UNetConfig(depth=3, width=8, prefill=prefill, residual=residual, upsample=upsample, norm=norm,
                            gated=True))
    image = torch.rand(2, 3, 32, 32)
    mask = random_masks(Corruption(2, 8, 32), 2, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(apply_mask(image, mask))
    assert out.dtype == torch.float32 and out.shape == (2, 3, 32, 32)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    out.mean().backward()
    assert model.head.weight.grad.abs().sum() > 0


def test_zero_initialised_residual_starts_at_the_prefill():
    model = UNet(UNetConfig(depth=3, width=8, prefill="pyramid", residual=True))
    image = torch.rand(2, 3, 64, 64)
    mask = random_masks(Corruption(4, 16, 64), 2, 64)
    out = model(apply_mask(image, mask))
    assert torch.equal(out, pyramid_fill(image * (1 - mask), mask).clamp(0, 1))


def test_short_training_improves_on_the_prefill(tiny_config, small_images):
    batch = ImageSet(small_images.pixels[:4], small_images.names[:4])
    cfg = tiny_config
    cfg.model.prefill, cfg.model.residual, cfg.model.width = "pyramid", True, 16
    cfg.loss.w_perceptual = 0.0
    cfg.train.fixed_train_masks = True
    cfg.train.val_mask_seed = cfg.train.train_mask_seed
    cfg.train.epochs, cfg.train.steps_per_epoch, cfg.optim.lr = 4, 10, 1e-3
    seen = []
    result = train(cfg, lambda m, _: seen.append(m["val/l1_hole"]), data={"train": batch, "val": batch})
    masks = fixed_masks(corruption_of(cfg), cfg.train.train_mask_seed, 4, 64)
    image = batch.batch([0, 1, 2, 3])
    prefill_l1 = float(((pyramid_fill(image * (1 - masks), masks) - image).abs() * masks).sum() / (masks.sum() * 3))
    assert result.status == "completed"
    assert seen[0] < prefill_l1 * 1.05  # starts from the pre-fill's quality, not from grey
    assert seen[-1] < prefill_l1
