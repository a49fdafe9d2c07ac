"""Image-quality metrics used to judge every trial the same way: PSNR and SSIM over the holes, whole-image PSNR.

All take images in [0, 1], shape (B, 3, H, W), and a mask (B, 1, H, W) with 1 = hole; each returns one value
per image, so callers can average per image (the convention of the quality anchors in NOTES.md). They work in
float32, or float64 when given float64 (the tests use that to compare with scikit-image exactly).

Definitions (tests/test_metrics.py checks them against scikit-image on real images):
- PSNR: 10 log10(1 / MSE) with data range 1, the MSE over all three channels (of the hole pixels for
  `psnr_hole`), capped at MAX_PSNR; skimage.metrics.peak_signal_noise_ratio(target, pred, data_range=1).
- SSIM map: per pixel and channel as skimage.metrics.structural_similarity(target, pred, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1, full=True) returns it (Wang et al.
  2004: 11x11 normalised Gaussian window of sigma 1.5, population covariances, C1 = 0.01^2, C2 = 0.03^2), with
  scipy's 'reflect' borders (half-sample symmetric, d c b a | a b c d), then averaged over the channels.
  `ssim_hole` averages that map over the hole pixels; skimage's scalar SSIM instead averages it over the image
  minus a 5-pixel border.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_PSNR = 100.0  # a perfect fill would be +inf; cap it so means stay finite

# Window of skimage's gaussian_weights=True: scipy's gaussian_filter with sigma 1.5 and truncate 3.5, so radius
# int(3.5 * 1.5 + 0.5) = 5, 11 taps.
_SIGMA = 1.5
_RADIUS = 5
_C1, _C2 = 0.01**2, 0.03**2  # (K1 * data range)^2, (K2 * data range)^2 with data range 1


def _floats(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images in one float dtype: float32, or float64 if either is float64."""
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    return pred.to(dtype), target.to(dtype)


def _psnr(mse: torch.Tensor) -> torch.Tensor:
    return (10.0 * torch.log10(1.0 / mse.clamp_min(10 ** (-MAX_PSNR / 10)))).clamp_max(MAX_PSNR)


def psnr_hole(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR over hole pixels only (all channels), per image."""
    pred, target = _floats(pred, target)
    se = (pred - target).square() * mask
    mse = se.sum(dim=(1, 2, 3)) / (mask.sum(dim=(1, 2, 3)) * pred.shape[1]).clamp_min(1.0)
    return _psnr(mse)


def psnr_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR over the whole image, per image. On a composite this is ~12 dB above hole PSNR at 6% holes."""
    pred, target = _floats(pred, target)
    return _psnr((pred - target).square().mean(dim=(1, 2, 3)))


def l1_hole(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over hole pixels, per image."""
    pred, target = _floats(pred, target)
    ae = (pred - target).abs() * mask
    return ae.sum(dim=(1, 2, 3)) / (mask.sum(dim=(1, 2, 3)) * pred.shape[1]).clamp_min(1.0)


def _gaussian_taps(like: torch.Tensor) -> torch.Tensor:
    """scipy's 1-D Gaussian kernel (sigma 1.5, radius 5, summing to 1) in `like`'s dtype and device."""
    x = torch.arange(-_RADIUS, _RADIUS + 1, dtype=like.dtype, device=like.device)
    g = torch.exp(-0.5 * (x / _SIGMA) ** 2)
    return g / g.sum()


def _symmetric_index(n: int, device: torch.device) -> torch.Tensor:
    """Source indices of a side of n padded by _RADIUS in scipy's 'reflect' mode (d c b a | a b c d | d c b a).

    torch's own 'reflect' is whole-sample (d c b | a b c d, scipy's 'mirror') and moves every border pixel's SSIM.
    Folding modulo 2n repeats the reflection, as scipy does, when the side is shorter than the radius.
    """
    i = torch.arange(-_RADIUS, n + _RADIUS, device=device) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


def _blur(t: torch.Tensor) -> torch.Tensor:
    """Gaussian-weighted local mean of each channel of (B, C, H, W), the window and borders of scipy's filter."""
    b, c, h, w = t.shape
    taps = _gaussian_taps(t)
    t = t.index_select(2, _symmetric_index(h, t.device)).index_select(3, _symmetric_index(w, t.device))
    # Separable, as scipy filters it: rows then columns, each channel on its own.
    t = F.conv2d(t.reshape(b * c, 1, h + 2 * _RADIUS, w + 2 * _RADIUS), taps.view(1, 1, -1, 1))
    t = F.conv2d(t, taps.view(1, 1, 1, -1))
    return t.view(b, c, h, w)


def ssim_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM (B, 1, H, W), averaged over RGB: scikit-image's full map, as the module docstring defines."""
    x, y = _floats(pred, target)
    # Under a caller's autocast the convolutions would run in bf16/fp16, far too coarse against C2 = 9e-4.
    with torch.autocast(x.device.type, enabled=False):
        # (Co)variances do not change when both images shift by one constant; taking the target's channel means off
        # first keeps E[x^2] - E[x]^2 from cancelling large terms: in float32 the map lands 5-7x closer to float64's.
        shift = y.mean(dim=(2, 3), keepdim=True)
        x, y = x - shift, y - shift
        mx, my = _blur(x), _blur(y)
        sxx = _blur(x * x) - mx**2
        syy = _blur(y * y) - my**2
        sxy = _blur(x * y) - mx * my
        mu_x, mu_y = mx + shift, my + shift
        s = ((2 * mu_x * mu_y + _C1) * (2 * sxy + _C2)) / ((mu_x**2 + mu_y**2 + _C1) * (sxx + syy + _C2))
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
