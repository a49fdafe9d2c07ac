"""The inpainting U-Net family and its config: depth, width, up-sampling, norm, gating, dilated bottleneck,
pyramid pre-fill of the input and residual output.

Input: the 4-channel masked image `cat(image * (1 - mask), mask)`; output: RGB in [0, 1] (before compositing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from data.corrupt import apply_mask, composite
from models.blocks import ACTIVATIONS, NORMS, UPSAMPLES, DilatedBlock, DoubleConv, check_choice, make_upsample
from models.prefill import pyramid_fill

PREFILLS = ("none", "pyramid")


@dataclass
class UNetConfig:
    """Architecture of one U-Net. Defaults: the reference method's small U-Net (depth 4, width 32)."""

    depth: int = 4  # number of down-sampling levels
    width: int = 32  # channels of the first level; doubled per level, capped at max_width
    max_width: int = 512
    upsample: str = "transpose"  # transpose | bilinear | nearest
    norm: str = "none"  # none | batch | instance | group
    activation: str = "relu"
    gated: bool = False  # gated convolutions (DeepFill v2)
    dilated_bottleneck: bool = False  # residual dilated convs (2, 4, 8) at the bottleneck
    prefill: str = "none"  # none | pyramid: holes pre-filled by push-pull before the network sees them
    residual: bool = False  # predict a correction to the (pre-filled) input; last layer zero-initialised

    def validate(self) -> None:
        if not 2 <= self.depth <= 6:
            raise ValueError(f"model.depth must be 2..6, got {self.depth}")
        if self.width < 1 or self.max_width < self.width:
            raise ValueError(f"model.width must be >= 1 and <= model.max_width, got {self.width}")
        check_choice("model.upsample", self.upsample, UPSAMPLES)
        check_choice("model.norm", self.norm, NORMS)
        check_choice("model.activation", self.activation, ACTIVATIONS)
        check_choice("model.prefill", self.prefill, PREFILLS)


class UNet(nn.Module):
    """Encoder-decoder with skip connections; every level halves the resolution."""

    def __init__(self, cfg: UNetConfig | None = None, **overrides):
        super().__init__()
        cfg = cfg or UNetConfig(**overrides)
        cfg.validate()
        self.cfg = cfg
        chans = [min(cfg.width * 2**i, cfg.max_width) for i in range(cfg.depth + 1)]
        opts = dict(norm=cfg.norm, act=cfg.activation, gated=cfg.gated)
        self.down = nn.ModuleList()
        cin = 4
        for c in chans[:-1]:
            self.down.append(DoubleConv(cin, c, **opts))
            cin = c
        self.pool = nn.MaxPool2d(2)
        bottleneck: list[nn.Module] = [DoubleConv(chans[-2], chans[-1], **opts)]
        if cfg.dilated_bottleneck:
            bottleneck.append(DilatedBlock(chans[-1], **opts))
        self.bottleneck = nn.Sequential(*bottleneck)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for i in reversed(range(cfg.depth)):
            self.up.append(make_upsample(cfg.upsample, chans[i + 1], chans[i]))
            self.merge.append(DoubleConv(2 * chans[i], chans[i], **opts))
        self.head = nn.Conv2d(chans[0], 3, kernel_size=1)
        self._init_weights()

    def _init_weights(self) -> None:
        # He init with zero bias keeps activations at unit scale through the depth; PyTorch's default init
        # shrinks them level by level until the biases alone decide and whole ReLU layers start dead.
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and m is not self.head:
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.cfg.residual:
            # A zero correction at the start: training begins from the pre-fill's quality, not from noise.
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    @property
    def multiple(self) -> int:
        """Height and width must be multiples of this."""
        return 2**self.cfg.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 4:
            raise ValueError(f"UNet expects a 4-channel input (masked RGB + mask), got {x.shape[1]} channels")
        if x.shape[-1] % self.multiple or x.shape[-2] % self.multiple:
            raise ValueError(
                f"UNet of depth {self.cfg.depth} needs height and width divisible by {self.multiple}, "
                f"got {tuple(x.shape[-2:])}; pad the image first"
            )
        start = x[:, :3]
        if self.cfg.prefill == "pyramid":
            start = pyramid_fill(x[:, :3], x[:, 3:])
            x = torch.cat([start, x[:, 3:]], dim=1)
        skips = []
        for level in self.down:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        # fp32 output: under autocast the head's bf16 output would quantise colours to ~3 digits.
        if self.cfg.residual:
            return (start.float() + self.head(x).float()).clamp(0.0, 1.0)
        return torch.sigmoid(self.head(x).float())


def inpaint(model: nn.Module, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model on a damaged image: (raw prediction, composite with the known pixels kept)."""
    pred = model(apply_mask(image, mask))
    return pred, composite(pred, image, mask)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
