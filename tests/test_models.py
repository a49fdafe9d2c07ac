"""The U-Net family: every option combination builds, runs, stays in [0, 1] and trains every parameter."""

from __future__ import annotations

import itertools

import pytest
import torch

from data.corrupt import Corruption, random_masks
from models.blocks import NORMS, UPSAMPLES
from models.unet import UNet, UNetConfig, count_parameters, inpaint

COMBOS = list(itertools.product(range(2, 7), UPSAMPLES, NORMS, (False, True), (False, True)))


@pytest.mark.parametrize(("depth", "upsample", "norm", "gated", "dilated"), COMBOS)
def test_every_option_combination_trains(depth, upsample, norm, gated, dilated):
    torch.manual_seed(0)
    # Width 8: at width 4 a whole level of ReLUs can start dead by chance, which is not what this tests.
    cfg = UNetConfig(depth=depth, width=8, upsample=upsample, norm=norm, gated=gated, dilated_bottleneck=dilated)
    model = UNet(cfg)
    size = 2 ** depth * 2  # a 2x2 bottleneck: instance norm needs more than one pixel
    x = torch.rand(2, 4, size, size)
    out = model(x)
    assert out.shape == (2, 3, size, size)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_depth_and_width_set_the_size():
    assert count_parameters(UNet(UNetConfig())) == pytest.approx(7.76e6, rel=0.01)  # the reference U-Net
    small = count_parameters(UNet(UNetConfig(depth=2, width=8)))
    assert small < count_parameters(UNet(UNetConfig(depth=3, width=8))) < count_parameters(UNet(UNetConfig(depth=3)))


def test_inpaint_composites_and_keeps_known_pixels():
    model = UNet(UNetConfig(depth=2, width=4))
    img = torch.rand(2, 3, 64, 64)
    mask = random_masks(Corruption(4, 16, 64), 2, 64)
    pred, comp = inpaint(model, img, mask)
    known = mask.expand_as(img) == 0
    assert torch.equal(comp[known], img[known])
    assert torch.equal(comp[~known], pred[~known])


def test_bad_options_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="depth"):
        UNet(UNetConfig(depth=7))
    with pytest.raises(ValueError, match="upsample"):
        UNet(UNetConfig(upsample="pixelshuffle"))
    with pytest.raises(ValueError, match="norm"):
        UNet(UNetConfig(norm="layer"))
    model = UNet(UNetConfig(depth=3, width=4))
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.rand(1, 4, 60, 64))
    with pytest.raises(ValueError, match="4-channel"):
        model(torch.rand(1, 3, 64, 64))
