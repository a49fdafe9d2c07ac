"""Push-pull pyramid fill: a classical inpainting that gives the U-Net a filled image to start from.

Pull: average-pool the premultiplied image and its validity level by level until no hole is left. Push: from the
coarsest level back up, keep what each level knows and take the upsampled coarser estimate where it does not.
Known pixels come back exactly; batched torch, any device, microseconds per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pyramid_fill(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill the holes (mask 1) of `image` (B, C, H, W); known pixels are returned unchanged."""
    dtype = image.dtype
    valid = 1.0 - mask.float()
    x = image.float() * valid  # premultiplied colour
    w = valid
    levels = [(x, w)]
    while min(x.shape[-2:]) > 1 and not bool((w > 0).all()):
        # ceil_mode keeps odd sizes covered; avg of premultiplied colour / avg of weight = weighted colour.
        x = F.avg_pool2d(x, 2, ceil_mode=True)
        w = F.avg_pool2d(w, 2, ceil_mode=True)
        levels.append((x, w))
    fill = x / w.clamp_min(1e-8)
    for x_l, w_l in reversed(levels[:-1]):
        up = F.interpolate(fill, size=x_l.shape[-2:], mode="bilinear", align_corners=False)
        # x_l is colour * w_l: where the level is fully known (w 1) it wins, where empty (w 0) the coarser does.
        fill = x_l + up * (1.0 - w_l)
    return fill.to(dtype)
