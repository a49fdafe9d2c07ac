"""The U-Net family: every value of every UNetConfig option is built, run, trained and checked for what it changes;
the structural options run in every combination, with the others spread so that every pair of values meets."""

from __future__ import annotations

import dataclasses
import itertools
import re
import typing

import pytest
import torch
from torch import nn

from data.corrupt import Corruption, apply_mask, random_masks
from models.blocks import ACTIVATIONS, NORMS, UPSAMPLES, ConvUnit, DilatedBlock
from models.prefill import pyramid_fill
from models.unet import PREFILLS, UNet, UNetConfig, count_parameters, inpaint

FIELDS = typing.get_type_hints(UNetConfig)
# The tables validate() checks each string option against (test_choice_tables_are_the_validated_ones proves it):
# a new entry in any of them is covered by every loop below without editing this file.
CHOICES = {"upsample": tuple(UPSAMPLES), "norm": tuple(NORMS), "activation": tuple(ACTIVATIONS),
           "prefill": tuple(PREFILLS)}


def _validates(**options) -> bool:
    try:
        UNetConfig(**options).validate()
    except ValueError:
        return False
    return True


# Every depth the config accepts (2..6 today), read from its own validation.
DEPTHS = tuple(d for d in range(0, 12) if _validates(depth=d))
BASE = {"depth": 3, "width": 8}  # the other options at their defaults
INTS = {"depth": DEPTHS, "width": (8, 16), "max_width": (8, 16, 64, 512)}  # max_width: caps 3, 2, 0, 0 levels


def option_values(name: str) -> tuple:
    """The values the loops give option `name`; () for an option they do not know (test_every_option_is_covered)."""
    if name in CHOICES:
        return CHOICES[name]
    if FIELDS[name] is bool:
        return (False, True)
    return INTS.get(name, ())


OPTION_CASES = [(name, value) for name in FIELDS for value in option_values(name)]


@dataclasses.dataclass
class Probe:
    image: torch.Tensor
    mask: torch.Tensor
    x: torch.Tensor  # the model input
    out: torch.Tensor
    first: torch.Tensor  # what the first level saw: (pre-filled) RGB + mask
    bottleneck: tuple[int, ...]  # the bottleneck's output shape


def _run(model: UNet, size: int, batch: int = 2) -> Probe:
    """A forward pass on real masked input (binary holes), recording the first level's input and the bottleneck."""
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 3, size, size, generator=gen)
    mask = random_masks(Corruption(2, max(1, size // 4), size), batch, size, generator=gen)
    x = apply_mask(image, mask)
    seen = {}
    hooks = [model.down[0].register_forward_pre_hook(lambda m, args: seen.update(first=args[0].detach().clone())),
             model.bottleneck.register_forward_hook(lambda m, a, out: seen.update(bottleneck=tuple(out.shape)))]
    try:
        out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return Probe(image, mask, x, out, seen["first"], seen["bottleneck"])


def _assert_output_ok(probe: Probe) -> None:
    assert probe.out.shape == probe.image.shape and probe.out.dtype == torch.float32
    assert torch.isfinite(probe.out).all() and probe.out.min() >= 0 and probe.out.max() <= 1


def _assert_every_parameter_learns(model: UNet, probe: Probe) -> None:
    out = probe.out
    if model.cfg.residual:
        # The zero-initialised head passes no gradient back at the start: only the head itself learns.
        out.square().mean().backward()
        assert model.head.weight.grad.abs().sum() > 0
        for name, p in model.named_parameters():
            if not name.startswith("head."):
                assert p.grad is None or not p.grad.any(), f"{name} learns through a zero head"
        # As after a first step: a non-zero correction, through which every layer must learn.
        with torch.no_grad():
            nn.init.normal_(model.head.weight, std=0.1)
        model.zero_grad(set_to_none=True)
        out = model(probe.x)
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def _units(model: nn.Module) -> list[ConvUnit]:
    units = [m for m in model.modules() if isinstance(m, ConvUnit)]
    assert units
    return units


def _convs(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]


def _out(unit: ConvUnit) -> int:
    return unit.conv.out_channels // (2 if unit.gated else 1)


def _level_channels(model: UNet) -> list[int]:
    """Output channels of every encoder level and of the bottleneck."""
    return [_out(level[-1]) for level in [*model.down, model.bottleneck[0]]]


def _widest(model: UNet) -> int:
    return max(_out(u) for u in _units(model))


# What each option changes, checked on the model built with it (base: BASE with the option set) and its probe.


def check_depth(model: UNet, value: int, probe: Probe) -> None:
    assert len(model.down) == len(model.up) == len(model.merge) == value
    assert model.multiple == 2**value
    size = probe.image.shape[-1]
    assert probe.bottleneck[-2:] == (size // 2**value, size // 2**value)


def check_width(model: UNet, value: int, probe: Probe) -> None:
    assert _level_channels(model) == [min(value * 2**i, model.cfg.max_width) for i in range(model.cfg.depth + 1)]
    assert _convs(model)[0].out_channels == value


def check_max_width(model: UNet, value: int, probe: Probe) -> None:
    depth, width = model.cfg.depth, model.cfg.width
    channels = _level_channels(model)
    assert channels == [min(width * 2**i, value) for i in range(depth + 1)]
    widest = _widest(model)
    assert widest == min(width * 2**depth, value)
    assert probe.bottleneck[1] == widest
    uncapped = UNet(UNetConfig(depth=depth, width=width))
    if width * 2**depth > value:
        assert widest == value
        assert count_parameters(model) < count_parameters(uncapped)
    else:
        assert count_parameters(model) == count_parameters(uncapped)


def check_upsample(model: UNet, value: str, probe: Probe) -> None:
    for up in model.up:
        if value == "transpose":
            assert isinstance(up, nn.ConvTranspose2d) and up.stride == (2, 2)
        else:
            resize, conv = up
            assert isinstance(resize, nn.Upsample) and resize.mode == value and resize.scale_factor == 2
            assert isinstance(conv, nn.Conv2d)
    assert not any(isinstance(m, nn.Upsample | nn.ConvTranspose2d) for m in [*model.down, model.bottleneck])


def _named_like(module: nn.Module, option: str) -> bool:
    """The module's class is the one the option names: leaky_relu -> LeakyReLU, batch -> BatchNorm2d, none ->
    Identity; the test's own knowledge, not the table the model is built from."""
    cls = type(module).__name__.lower()
    return cls == "identity" if option == "none" else cls.startswith(option.replace("_", ""))


def check_norm(model: UNet, value: str, probe: Probe) -> None:
    for unit in _units(model):
        assert _named_like(unit.norm, value), unit.norm
        assert type(unit.norm) is type(NORMS[value](_out(unit))), unit.norm
        # A norm right after the conv makes its bias redundant: dropped exactly when there is one.
        assert (unit.conv.bias is None) == (value != "none")
    if value == "batch":  # training-mode forward updated the running statistics
        assert all(u.norm.num_batches_tracked == 1 for u in _units(model))
    if value == "instance":  # every sample's every channel normalised on its own, in training and in eval
        unit = model.down[0][0]
        feat = unit.conv(probe.first)
        for training in (True, False):
            unit.norm.train(training)
            means = unit.norm(feat).mean(dim=(2, 3))
            assert torch.allclose(means, unit.norm.bias.expand(len(feat), -1), atol=1e-4), training
        unit.norm.train()


def check_activation(model: UNet, value: str, probe: Probe) -> None:
    ref = ACTIVATIONS[value](False)
    settings = {k: v for k, v in vars(ref).items() if not k.startswith("_") and k not in ("training", "inplace")}
    for unit in _units(model):
        assert _named_like(unit.act, value), unit.act
        assert type(unit.act) is type(ref), unit.act
        assert {k: getattr(unit.act, k) for k in settings} == settings  # e.g. leaky_relu's slope
    others = {type(make(False)) for name, make in ACTIVATIONS.items() if name != value} - {type(ref)}
    assert not [m for m in model.modules() if type(m) in others]


def test_every_activation_is_a_different_function():
    t = torch.linspace(-3, 3, 13)
    curves = {name: make(False)(t.clone()) for name, make in ACTIVATIONS.items()}
    for (a, ca), (b, cb) in itertools.combinations(curves.items(), 2):
        assert not torch.allclose(ca, cb, atol=1e-3), f"activations {a} and {b} compute the same function"
    for name, curve in curves.items():  # all pass large positive inputs (nearly) on and damp negative ones
        assert (curve[t > 0] > 0).all() and (curve[t > 0] <= t[t > 0] + 1e-6).all(), name
        assert abs(float(curve[-1]) - 3.0) < 0.2, name
        assert (curve[t < 0] > t[t < 0]).all() and (curve[t < 0] <= 0).all(), name


def check_gated(model: UNet, value: bool, probe: Probe) -> None:
    plain = UNet(UNetConfig(**BASE))
    for unit, ref in zip(_units(model), _units(plain), strict=True):
        assert unit.gated is value
        assert unit.conv.out_channels == ref.conv.out_channels * (2 if value else 1)
    assert (count_parameters(model) > count_parameters(plain)) is value


def check_dilated_bottleneck(model: UNet, value: bool, probe: Probe) -> None:
    assert len(model.bottleneck) == 1 + value
    blocks = [m for m in model.modules() if isinstance(m, DilatedBlock)]
    if value:
        assert blocks == [model.bottleneck[-1]]
        assert [u.conv.dilation for u in blocks[0].units] == [(2, 2), (4, 4), (8, 8)]
        plain = UNet(UNetConfig(**BASE))
        assert count_parameters(model) == count_parameters(plain) + count_parameters(blocks[0])
    else:
        assert blocks == []
    dilated = {id(u) for b in blocks for u in b.units}
    assert all(u.conv.dilation == (1, 1) for u in _units(model) if id(u) not in dilated)


def check_prefill(model: UNet, value: str, probe: Probe) -> None:
    rgb, known = probe.first[:, :3], probe.mask.expand_as(probe.image) == 0
    assert torch.equal(probe.first[:, 3:], probe.mask)
    assert torch.equal(rgb[known], probe.image[known])  # known pixels reach the network unchanged
    if value == "none":
        assert (rgb[~known] == 0).all()
    else:
        assert (rgb[~known] > 0).all()  # every hole pixel filled (the image is positive everywhere)
    if value == "pyramid":
        assert torch.equal(rgb, pyramid_fill(probe.x[:, :3], probe.mask))


def check_residual(model: UNet, value: bool, probe: Probe) -> None:
    start = probe.first[:, :3]
    if not value:
        assert model.head.weight.abs().sum() > 0
        assert not torch.allclose(probe.out, start.clamp(0, 1), atol=1e-3)
        return
    assert not model.head.weight.any() and not model.head.bias.any()
    assert torch.equal(probe.out, start.clamp(0, 1))
    # With every pre-fill: the zero correction returns exactly what the network started from.
    for prefill in CHOICES["prefill"]:
        torch.manual_seed(0)
        other = UNet(UNetConfig(**BASE, residual=True, prefill=prefill))
        seen = _run(other, probe.image.shape[-1])
        assert torch.equal(seen.out, seen.first[:, :3].clamp(0, 1)), prefill


CHECKS = {name[len("check_"):]: f for name, f in globals().items() if name.startswith("check_")}


def test_every_option_is_covered():
    """A new UNetConfig field fails here until the loops give it values and a check says what it changes."""
    assert {name for name in FIELDS if option_values(name)} == set(FIELDS)
    assert set(CHECKS) == set(FIELDS)
    assert DEPTHS == (2, 3, 4, 5, 6)


def test_choice_tables_are_the_validated_ones():
    for name, choices in CHOICES.items():
        assert getattr(UNetConfig(), name) in choices
        assert all(_validates(**{name: value}) for value in choices)
        with pytest.raises(ValueError, match=re.escape(f"model.{name} 'no-such'; choose one of {', '.join(choices)}")):
            UNetConfig(**{name: "no-such"}).validate()


@pytest.mark.parametrize(("option", "value"), OPTION_CASES, ids=[f"{n}={v}" for n, v in OPTION_CASES])
def test_each_option_value_runs_trains_and_changes_the_model(option, value):
    torch.manual_seed(0)
    model = UNet(UNetConfig(**{**BASE, option: value}))
    assert getattr(model.cfg, option) == value
    probe = _run(model, max(32, 2 * model.multiple))
    _assert_output_ok(probe)
    CHECKS[option](model, value, probe)
    _assert_every_parameter_learns(model, probe)


# Every combination of the structural options; activation, pre-fill, residual and max_width are spread over them
# so that every value of every option meets every value of every other option at least once.
PRODUCT = ("depth", "upsample", "norm", "gated", "dilated_bottleneck")
SPREAD = {"activation": CHOICES["activation"], "prefill": CHOICES["prefill"], "residual": (False, True),
          "max_width": (16, 512)}


def _pairs(combo: dict) -> set:
    return set(itertools.combinations(sorted(combo.items(), key=lambda kv: kv[0]), 2))


def _combinations() -> list[dict]:
    values = {**{name: option_values(name) for name in PRODUCT}, **SPREAD}
    wanted = {((a, va), (b, vb)) for a, b in itertools.combinations(sorted(values), 2)
              for va in values[a] for vb in values[b]}
    spreads = [dict(zip(SPREAD, c, strict=True)) for c in itertools.product(*SPREAD.values())]
    combos = []
    for i, c in enumerate(itertools.product(*(values[n] for n in PRODUCT))):
        base = dict(zip(PRODUCT, c, strict=True))
        # Most new pairs first; among equals, the next in turn, so the spread values stay evenly used.
        turn = spreads[i % len(spreads):] + spreads[: i % len(spreads)]
        best = max(turn, key=lambda s: len(_pairs({**base, **s}) & wanted))
        combos.append({**base, **best})
        wanted -= _pairs(combos[-1])
    assert not wanted, f"value pairs never combined: {sorted(wanted)[:5]}"
    return combos


COMBOS = _combinations()


@pytest.mark.parametrize("combo", COMBOS, ids=["-".join(map(str, c.values())) for c in COMBOS])
def test_every_option_combination_trains(combo):
    torch.manual_seed(0)
    # Width 8: at width 4 a whole level of ReLUs can start dead by chance, which is not what this tests.
    model = UNet(UNetConfig(width=8, **combo))
    probe = _run(model, 2 * model.multiple)  # a 2x2 bottleneck: instance norm needs more than one pixel
    _assert_output_ok(probe)
    assert type(_units(model)[0].act) is type(ACTIVATIONS[combo["activation"]](False))
    assert _widest(model) == min(8 * model.multiple, combo["max_width"])
    _assert_every_parameter_learns(model, probe)


def test_depth_and_width_set_the_size():
    assert count_parameters(UNet(UNetConfig())) == pytest.approx(7.76e6, rel=0.01)  # the reference U-Net
    small = count_parameters(UNet(UNetConfig(depth=2, width=8)))
    assert small < count_parameters(UNet(UNetConfig(depth=3, width=8))) < count_parameters(UNet(UNetConfig(depth=3)))


def test_inpaint_composites_and_keeps_known_pixels():
    model = UNet(UNetConfig(depth=2, width=4))
    img = torch.rand(2, 3, 64, 64)
    mask = random_masks(Corruption(4, 16, 64), 2, 64)
    pred, comp = inpaint(model, img, mask)
    assert torch.equal(pred, model(apply_mask(img, mask)))
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
    with pytest.raises(ValueError, match="activation"):
        UNet(UNetConfig(activation="tanh"))
    with pytest.raises(ValueError, match="prefill"):
        UNet(UNetConfig(prefill="telea"))
    with pytest.raises(ValueError, match="max_width"):
        UNet(UNetConfig(width=64, max_width=32))
    model = UNet(UNetConfig(depth=3, width=4))
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.rand(1, 4, 60, 64))
    with pytest.raises(ValueError, match="4-channel"):
        model(torch.rand(1, 3, 64, 64))
