"""The training loss: a weighted sum of the enabled terms, returning (total, {term: unweighted value}).

Only terms with a non-zero weight are built and computed; VGG16 is loaded only when perceptual or style is on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from losses.perceptual import DEFAULT_LAYERS, WEIGHT_SOURCES, VGGFeatures, parse_layers, perceptual_and_style
from losses.pixel import reconstruction
from losses.tv import total_variation


@dataclass
class LossConfig:
    """Loss weights. Defaults: the reference method (L1 + perceptual + TV), Partial-Conv-like proportions."""

    recon: str = "l1"  # l1 | l2
    w_hole: float = 6.0
    w_valid: float = 1.0
    w_perceptual: float = 0.05
    w_style: float = 0.0
    w_tv: float = 0.1
    perceptual_layers: str = ",".join(DEFAULT_LAYERS)  # comma-separated, e.g. "relu1_2,relu2_2,relu3_3"
    vgg_weights: str = "shipped"  # shipped | torchvision (only if its checkpoint is already cached)

    def validate(self) -> None:
        if self.recon not in ("l1", "l2"):
            raise ValueError(f"loss.recon must be l1 or l2, got {self.recon!r}")
        for name in ("w_hole", "w_valid", "w_perceptual", "w_style", "w_tv"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        if self.vgg_weights not in WEIGHT_SOURCES:
            raise ValueError(f"loss.vgg_weights must be one of {WEIGHT_SOURCES}, got {self.vgg_weights!r}")
        parse_layers(self.perceptual_layers)

    @property
    def uses_vgg(self) -> bool:
        return self.w_perceptual > 0 or self.w_style > 0


class CompositeLoss(nn.Module):
    """loss(pred, target, mask) -> (total, terms). `pred` is the raw output; the composite is made here."""

    def __init__(self, cfg: LossConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or LossConfig()
        cfg.validate()
        self.vgg = VGGFeatures(parse_layers(cfg.perceptual_layers), cfg.vgg_weights) if cfg.uses_vgg else None

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        comp = mask * pred + (1.0 - mask) * target
        terms = reconstruction(pred, target, mask, cfg.recon)
        weighted = [cfg.w_hole * terms[f"{cfg.recon}_hole"]]
        if cfg.w_valid > 0:
            weighted.append(cfg.w_valid * terms[f"{cfg.recon}_valid"])
        else:
            terms.pop(f"{cfg.recon}_valid")
        if self.vgg is not None:
            terms.update(perceptual_and_style(
                self.vgg, pred, comp, target, perceptual=cfg.w_perceptual > 0, style=cfg.w_style > 0,
            ))
            if cfg.w_perceptual > 0:
                weighted.append(cfg.w_perceptual * terms["perceptual"])
            if cfg.w_style > 0:
                weighted.append(cfg.w_style * terms["style"])
        if cfg.w_tv > 0:
            terms["tv"] = total_variation(comp, mask)
            weighted.append(cfg.w_tv * terms["tv"])
        total = torch.stack(weighted).sum()
        return total, {k: v.detach() for k, v in terms.items()}
