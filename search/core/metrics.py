"""Image-quality metrics used to judge every trial the same way: PSNR and SSIM over the holes, whole-image PSNR.

All take images in [0, 1], shape (B, 3, H, W), and a mask (B, 1, H, W) with 1 = hole; each returns one value
per image, so callers can average per image (the convention of the quality anchors in NOTES.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_PSNR = 100.0  # a perfect fill would be +inf; cap it so means stay finite


def _psnr(mse: torch.Tensor) -> torch.Tensor:
    return (10.0 * torch.log10(1.0 / mse.clamp_min(10 ** (-MAX_PSNR / 10)))).clamp_max(MAX_PSNR)


def psnr_hole(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR over hole pixels only (all channels), per image."""
    se = (pred.float() - target.float()).square() * mask
    mse = se.sum(dim=(1, 2, 3)) / (mask.sum(dim=(1, 2, 3)) * pred.shape[1]).clamp_min(1.0)
    return _psnr(mse)


def psnr_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR over the whole image, per image. On a composite this is ~12 dB above hole PSNR at 6% holes."""
    return _psnr((pred.float() - target.float()).square().mean(dim=(1, 2, 3)))


def l1_hole(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over hole pixels, per image."""
    ae = (pred.float() - target.float()).abs() * mask
    return ae.sum(dim=(1, 2, 3)) / (mask.sum(dim=(1, 2, 3)) * pred.shape[1]).clamp_min(1.0)


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()


def ssim_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM (B, 1, H, W), Gaussian window 11 / sigma 1.5, averaged over RGB; reflect-padded."""
    x, y = pred.float(), target.float()
    win = _gaussian_window(device=x.device)
    pad = win.shape[-1] // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (pad,) * 4, mode="reflect"), win, groups=3)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean(dim=1, keepdim=True)


def ssim_hole(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SSIM map of the (composited) image averaged over hole pixels, per image."""
    s = ssim_map(pred, target) * mask
    return s.sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp_min(1.0)


def hole_metrics(comp: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """All per-image metrics of a composited result, keyed without a prefix."""
    return {
        "psnr_hole": psnr_hole(comp, target, mask),
        "ssim_hole": ssim_hole(comp, target, mask),
        "l1_hole": l1_hole(comp, target, mask),
        "psnr": psnr_image(comp, target),
    }
