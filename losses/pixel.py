"""Masked reconstruction loss (L1 or L2) with separate weights for hole and valid pixels.

Each region is averaged over its own pixels, so `l1_hole` reads as the mean absolute error inside the holes
whatever their coverage (Partial Conv normalises by all pixels instead; its weights differ accordingly).
"""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of `values` (B, C, H, W) over the pixels where `weight` (B, 1, H, W) is 1; 0 if there are none."""
    channels = values.shape[1]
    return (values * weight).sum() / (weight.sum() * channels).clamp_min(1.0)


def reconstruction(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str = "l1",
) -> dict[str, torch.Tensor]:
    """{'<kind>_hole': .., '<kind>_valid': ..}: per-region mean error, unweighted."""
    diff = pred.float() - target.float()
    if kind == "l1":
        err = diff.abs()
    elif kind == "l2":
        err = diff.square()
    else:
        raise ValueError(f"unknown reconstruction loss {kind!r}; choose l1 or l2")
    return {f"{kind}_hole": masked_mean(err, mask), f"{kind}_valid": masked_mean(err, 1.0 - mask)}
