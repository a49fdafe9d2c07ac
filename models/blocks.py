"""Building blocks of the U-Net family: convolutions (plain or gated), norms, activations, up-sampling.

Each option is a small name -> constructor table, so a study can name it and a new variant is one entry.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _group_norm(channels: int) -> nn.Module:
    # 8 groups is the usual choice; fall back to fewer when the width does not divide.
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


NORMS: dict[str, Callable[[int], nn.Module]] = {
    "none": lambda c: nn.Identity(),
    "batch": nn.BatchNorm2d,
    "instance": lambda c: nn.InstanceNorm2d(c, affine=True),
    "group": _group_norm,
}

ACTIVATIONS: dict[str, Callable[[bool], nn.Module]] = {
    "relu": lambda inplace: nn.ReLU(inplace=inplace),
    "leaky_relu": lambda inplace: nn.LeakyReLU(0.2, inplace=inplace),
    "gelu": lambda inplace: nn.GELU(),
    "silu": lambda inplace: nn.SiLU(inplace=inplace),
}

UPSAMPLES = ("transpose", "bilinear", "nearest")


def check_choice(kind: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; choose one of {', '.join(choices)}")


class ConvUnit(nn.Module):
    """conv 3x3 -> norm -> activation; gated (DeepFill v2 style) multiplies by a learned sigmoid gate."""

    def __init__(self, cin: int, cout: int, norm: str, act: str, gated: bool, dilation: int = 1):
        super().__init__()
        check_choice("norm", norm, NORMS)
        check_choice("activation", act, ACTIVATIONS)
        # A norm right after the conv makes its bias redundant.
        bias = norm == "none"
        self.gated = gated
        self.conv = nn.Conv2d(cin, cout * (2 if gated else 1), 3, padding=dilation, dilation=dilation, bias=bias)
        self.norm = NORMS[norm](cout)
        # In-place saves memory, but not on a chunk() view of the gated conv's output (autograd forbids it).
        self.act = ACTIVATIONS[act](not gated)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.gated:
            feat, gate = y.chunk(2, dim=1)
            return self.act(self.norm(feat)) * torch.sigmoid(gate)
        return self.act(self.norm(y))


class DoubleConv(nn.Sequential):
    """The U-Net level: two conv units."""

    def __init__(self, cin: int, cout: int, norm: str, act: str, gated: bool):
        super().__init__(ConvUnit(cin, cout, norm, act, gated), ConvUnit(cout, cout, norm, act, gated))


class DilatedBlock(nn.Module):
    """Residual stack of dilated convs (2, 4, 8): a wide receptive field at the bottleneck for large holes."""

    def __init__(self, channels: int, norm: str, act: str, gated: bool, dilations=(2, 4, 8)):
        super().__init__()
        self.units = nn.ModuleList(ConvUnit(channels, channels, norm, act, gated, d) for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = x + unit(x)
        return x


def make_upsample(mode: str, cin: int, cout: int) -> nn.Module:
    """x2 up-sampling from cin to cout channels. The resize + conv variants avoid checkerboard artifacts."""
    check_choice("upsample", mode, UPSAMPLES)
    if mode == "transpose":
        return nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)
    resize = nn.Upsample(scale_factor=2, mode=mode, align_corners=False if mode == "bilinear" else None)
    return nn.Sequential(resize, nn.Conv2d(cin, cout, 3, padding=1))
