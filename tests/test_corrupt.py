"""The reference corruption: 4 holes of 32x32 at 256, coverage bounds, fresh train masks, fixed val masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.corrupt import Corruption, apply_mask, composite, draw_mask, fixed_mask, random_masks
from data.images import fixed_masks

C = Corruption()


def _n_components_bounds(mask: torch.Tensor) -> tuple[int, int]:
    """(bounding height, width) of the mask's hole pixels."""
    ys, xs = torch.nonzero(mask[0], as_tuple=True)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


def test_reference_defaults():
    assert (C.n_holes, C.hole_size, C.image_size) == (4, 32, 256)
    assert C.min_coverage == pytest.approx(0.015625)
    assert C.max_coverage == pytest.approx(0.0625)


@pytest.mark.parametrize("source", ["numpy", "torch"])
def test_coverage_and_values_within_bounds(source):
    if source == "numpy":
        rng = np.random.default_rng(0)
        masks = torch.stack([draw_mask(C, rng) for _ in range(500)])
    else:
        masks = random_masks(C, 500, 256, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (500, 1, 256, 256)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    cover = masks.mean(dim=(1, 2, 3))
    assert cover.min() >= C.min_coverage - 1e-9
    assert cover.max() <= C.max_coverage + 1e-9
    # Overlap allowed: two uniform 32px squares in 225 positions overlap with p ~ 0.068, so ~0.66 of masks
    # have no overlap among their 6 pairs (500 draws: sd ~0.02).
    no_overlap = (cover == C.max_coverage).float().mean()
    assert 0.58 < no_overlap < 0.74


def test_every_hole_is_a_32px_square():
    # One hole at a time: the mask must be exactly a 32x32 square inside the image.
    one = Corruption(n_holes=1)
    for i in range(50):
        m = fixed_mask(one, 7, i)
        assert m.sum() == 32 * 32
        assert _n_components_bounds(m) == (32, 32)
    torch_masks = random_masks(one, 50, 256)
    assert (torch_masks.sum(dim=(1, 2, 3)) == 32 * 32).all()


def test_positions_are_uniform_and_reach_the_borders():
    masks = random_masks(C, 1000, 256, generator=torch.Generator().manual_seed(1))
    per_pixel = masks.mean(dim=0)[0]
    # Holes reach every border: the first and last rows and columns get covered.
    assert per_pixel[0].sum() > 0 and per_pixel[-1].sum() > 0
    assert per_pixel[:, 0].sum() > 0 and per_pixel[:, -1].sum() > 0
    centre = per_pixel[96:160, 96:160].mean()
    # A uniform corner position covers each interior pixel with p = 1-(1-(32/225)^2)^4 ~ 0.078.
    assert 0.06 < centre < 0.095


def test_train_masks_vary_between_draws():
    a = random_masks(C, 8, 256)
    b = random_masks(C, 8, 256)
    assert not torch.equal(a, b)
    assert not torch.equal(a[0], a[1])


def test_validation_masks_repeat_and_differ_per_image():
    a = fixed_masks(C, 1234, 10, 256)
    b = fixed_masks(C, 1234, 10, 256)
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a, fixed_masks(C, 4321, 10, 256))


def test_apply_mask_and_composite():
    img = torch.rand(2, 3, 64, 64)
    mask = random_masks(Corruption(4, 16, 64), 2, 64)
    x = apply_mask(img, mask)
    assert x.shape == (2, 4, 64, 64)
    assert (x[:, :3][mask.expand(-1, 3, -1, -1) == 1] == 0).all()
    assert torch.equal(x[:, 3:], mask)
    pred = torch.zeros_like(img)
    comp = composite(pred, img, mask)
    assert torch.equal(comp[mask.expand_as(img) == 0], img[mask.expand_as(img) == 0])
    assert (comp[mask.expand_as(img) == 1] == 0).all()


def test_bad_corruption_is_rejected():
    with pytest.raises(ValueError, match="hole_size"):
        Corruption(hole_size=300)
    with pytest.raises(ValueError, match="n_holes"):
        Corruption(n_holes=0)
