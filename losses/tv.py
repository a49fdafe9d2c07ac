"""Total variation of the composited image over the hole dilated by one pixel (Partial Convolutions, 2018).

A smoothness prior, not a distance to the target: it is zero for a flat fill and grows with texture and
checkerboard artifacts in and around the holes; pixels farther from a hole never affect it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dilate(mask: torch.Tensor, pixels: int = 1) -> torch.Tensor:
    """The hole grown by `pixels` in every direction (8-connected)."""
    k = 2 * pixels + 1
    return F.max_pool2d(mask, kernel_size=k, stride=1, padding=pixels)


def total_variation(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbours, over neighbour pairs inside the dilated hole."""
    region = dilate(mask)
    image = image.float()
    # A pair counts when both its pixels lie in the region: that covers every pair touching a hole pixel.
    w_h = region[..., :, 1:] * region[..., :, :-1]
    w_v = region[..., 1:, :] * region[..., :-1, :]
    d_h = (image[..., :, 1:] - image[..., :, :-1]).abs() * w_h
    d_v = (image[..., 1:, :] - image[..., :-1, :]).abs() * w_v
    pairs = (w_h.sum() + w_v.sum()) * image.shape[1]
    return (d_h.sum() + d_v.sum()) / pairs.clamp_min(1.0)
