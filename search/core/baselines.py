"""Classical inpainting baselines, judged by the same metric code as the models: mean fill, the pyramid pre-fill,
OpenCV Telea and Navier-Stokes, and scikit-image's biharmonic fill.

Each takes images (B, 3, H, W) in [0, 1] and masks (B, 1, H, W), 1 = hole, and returns the filled images.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
from skimage.restoration import inpaint_biharmonic

from models.prefill import pyramid_fill


def mean_fill(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each hole takes the mean colour of the image's known pixels."""
    valid = 1.0 - mask
    mean = (image * valid).sum(dim=(2, 3), keepdim=True) / valid.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)
    return image * valid + mean * mask


def _per_image(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    def run(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = []
        for img, m in zip(image.cpu(), mask.cpu(), strict=True):
            rgb = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            hole = m[0].numpy() > 0.5
            out.append(torch.from_numpy(fn(rgb, hole)).float().div(255).permute(2, 0, 1))
        return torch.stack(out).to(image.device)

    return run


def _opencv(flag: int):
    # Radius 3 is OpenCV's documented default neighbourhood.
    return _per_image(lambda rgb, hole: cv2.inpaint(rgb, hole.astype(np.uint8), 3, flag))


def _biharmonic(rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
    filled = inpaint_biharmonic(rgb.astype(np.float64) / 255, hole, channel_axis=-1)
    return (np.clip(filled, 0, 1) * 255).round().astype(np.uint8)


BASELINES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mean fill": mean_fill,
    "pyramid pre-fill": lambda image, mask: pyramid_fill(image * (1 - mask), mask),
    "OpenCV Telea": _opencv(cv2.INPAINT_TELEA),
    "OpenCV Navier-Stokes": _opencv(cv2.INPAINT_NS),
    "biharmonic": _per_image(_biharmonic),
}
