"""The reference corruption: N square holes (default 4 of 32x32 at 256x256), uniform positions, overlap allowed.

Masks are float tensors (B, 1, H, W) with 1 = hole. Training draws fresh holes per sample and epoch; validation
and test masks come from a seed and a sample index, so every trial and every run is judged on the same holes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Corruption:
    """How images are damaged. Hole size is in pixels at the given image size."""

    n_holes: int = 4
    hole_size: int = 32
    image_size: int = 256

    def __post_init__(self) -> None:
        if self.n_holes < 1:
            raise ValueError(f"n_holes must be >= 1, got {self.n_holes}")
        if not 1 <= self.hole_size <= self.image_size:
            raise ValueError(f"hole_size must be in [1, image_size={self.image_size}], got {self.hole_size}")

    @property
    def min_coverage(self) -> float:
        """Coverage when every hole lands on the same spot."""
        return self.hole_size**2 / self.image_size**2

    @property
    def max_coverage(self) -> float:
        """Coverage when no two holes overlap."""
        return min(1.0, self.n_holes * self.min_coverage)


def scaled_hole(size: int, hole_at_256: int = 32) -> int:
    """The reference hole (32 px at 256) at another image size: the same 1.6-6.25% coverage."""
    return max(1, round(hole_at_256 * size / 256))


def draw_mask(
    corruption: Corruption, rng: np.random.Generator, size: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """One mask (1, H, W), holes placed uniformly with the top-left corner anywhere the hole still fits.

    `size` is a side or (height, width); any image gets the corruption, not only squares.
    """
    height, width = (size, size) if isinstance(size, int) else size or (corruption.image_size,) * 2
    # A study may scale holes with the image; by default the hole keeps its pixel size.
    hy, hx = min(corruption.hole_size, height), min(corruption.hole_size, width)
    mask = torch.zeros(1, height, width)
    corners = rng.integers(0, (height - hy + 1, width - hx + 1), size=(corruption.n_holes, 2))
    for y, x in corners:
        mask[:, y : y + hy, x : x + hx] = 1.0
    return mask


def random_masks(
    corruption: Corruption, batch: int, size: int, device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fresh masks (B, 1, H, W) for a training batch, drawn on `device` in one vectorised step."""
    hole = min(corruption.hole_size, size)
    corners = torch.randint(0, size - hole + 1, (batch, corruption.n_holes, 2), generator=generator)
    corners = corners.to(device)
    coords = torch.arange(size, device=device)
    # (B, n, H) and (B, n, W) band indicators; their outer product is each hole, any() merges overlaps.
    rows = (coords >= corners[..., :1]) & (coords < corners[..., :1] + hole)
    cols = (coords >= corners[..., 1:]) & (coords < corners[..., 1:] + hole)
    holes = rows[..., :, None] & cols[..., None, :]
    return holes.any(dim=1, keepdim=True).float()


def fixed_mask(corruption: Corruption, seed: int, index: int, size: int | None = None) -> torch.Tensor:
    """The mask of sample `index` under `seed`: the same on every call, in every process and run."""
    # SeedSequence mixes (seed, index) so neighbouring indices give unrelated holes.
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    return draw_mask(corruption, rng, size)


def apply_mask(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The model input: the image with holes blacked out, plus the mask as a 4th channel."""
    return torch.cat([image * (1.0 - mask), mask], dim=-3)


def composite(pred: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep known pixels, take the prediction only in the holes."""
    return mask * pred + (1.0 - mask) * image
