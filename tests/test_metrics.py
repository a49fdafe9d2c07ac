"""Evaluation metrics: known values on constructed errors and agreement with scikit-image on real images (the
library boundaries of DESIGN.md are checked in test_layout.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import search.core.metrics as metrics
from data.corrupt import Corruption, composite, fixed_mask, scaled_hole
from data.images import DEFAULT_IMAGES, load_image
from search.core.baselines import BASELINES
from search.core.metrics import MAX_PSNR, hole_metrics, l1_hole, psnr_hole, psnr_image, ssim_hole, ssim_map

ROOT = Path(__file__).resolve().parents[1]

# Varied real content: texture, a dark near-flat sky (small SSIM denominators), food, a smooth gradient.
REAL = ("kodak_kodim03", "skimage_hubble_deep_field", "skimage_coffee", "lomiri1604_sunset_by_Aitzol_Berasategi")
SIZE = 96
BORDER = 5  # skimage's window radius: it crops (win_size - 1) // 2 from each side before its scalar mean
# float64 must give skimage's numbers up to rounding (measured 4e-13). float32, what training uses, is bounded by
# the cancellation in E[x^2] - E[x]^2 against C2 = 9e-4: measured up to 1.1e-4 on single pixels of the map and 3e-6
# on its means at 96-256 px, where torch's whole-sample 'reflect' was off by 0.08-0.2 on the border.
TOL = {torch.float64: {"map": 1e-9, "mean": 1e-9, "db": 1e-9, "l1": 1e-12},
       torch.float32: {"map": 3e-4, "mean": 2e-5, "db": 1e-4, "l1": 1e-6}}


def _pair():
    torch.manual_seed(0)
    target = torch.rand(2, 3, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., 8:16, 8:16] = 1
    return target, mask


def test_known_values():
    target, mask = _pair()
    pred = target + 0.1 * mask  # error 0.1 in the holes only
    assert torch.allclose(psnr_hole(pred, target, mask), torch.tensor([20.0, 20.0]), atol=1e-4)
    assert torch.allclose(l1_hole(pred, target, mask), torch.tensor([0.1, 0.1]), atol=1e-6)
    # Holes are 1/16 of the image: whole-image MSE is 16x lower, +12.04 dB.
    assert torch.allclose(psnr_image(pred, target), torch.tensor([32.04, 32.04]), atol=1e-2)


def test_perfect_and_bad_fills():
    target, mask = _pair()
    perfect = hole_metrics(target, target, mask)
    assert (perfect["psnr_hole"] == MAX_PSNR).all() and (perfect["l1_hole"] == 0).all()
    assert torch.allclose(perfect["ssim_hole"], torch.ones(2), atol=1e-4)
    grey = target * (1 - mask) + 0.5 * mask
    bad = hole_metrics(grey, target, mask)
    assert (bad["ssim_hole"] < 0.5).all() and (bad["psnr_hole"] < 15).all()


def test_ssim_only_sees_the_holes():
    target, mask = _pair()
    outside = target.clone()
    outside[..., 24:, 24:] = 0.0  # damage far from the hole (beyond the 11x11 window)
    assert torch.allclose(ssim_hole(outside, target, mask), torch.ones(2), atol=1e-4)


def _skimage_ssim(target: np.ndarray, pred: np.ndarray) -> tuple[float, np.ndarray]:
    """skimage's scalar SSIM and its full map averaged over channels, Wang et al.'s settings."""
    mssim, full = structural_similarity(target, pred, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=1.0, channel_axis=-1, full=True)
    return float(mssim), full.mean(axis=-1)


@pytest.fixture(scope="module")
def real() -> tuple[torch.Tensor, torch.Tensor]:
    """4 embedded photos at 96 px (B, 3, H, W) float64 and their reference-corruption masks (B, 1, H, W)."""
    images = np.stack([load_image(DEFAULT_IMAGES / f"{name}.jpg", SIZE) for name in REAL])
    target = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255
    corruption = Corruption(n_holes=4, hole_size=scaled_hole(SIZE), image_size=SIZE)
    mask = torch.stack([fixed_mask(corruption, seed=0, index=i, size=SIZE) for i in range(len(REAL))]).double()
    return target, mask


def _degrade(kind: str, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A realistic result: holes filled by a project baseline and composited, or the whole image noisy / blurred."""
    if kind in BASELINES:
        return composite(BASELINES[kind](target.float(), mask.float()).double(), target, mask)
    if kind == "noise":
        noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        return (target + 0.05 * noise).clamp(0, 1)
    # Blur: a 5x5 binomial kernel on each channel, replicate borders.
    k = torch.tensor([1.0, 4, 6, 4, 1], dtype=torch.float64) / 16
    w = (k[:, None] * k[None, :]).expand(3, 1, 5, 5)
    return torch.nn.functional.conv2d(torch.nn.functional.pad(target, (2,) * 4, mode="replicate"), w, groups=3)


DEGRADATIONS = ("OpenCV Telea", "mean fill", "noise", "blur")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_metrics_match_scikit_image_on_real_images(real, kind, dtype):
    """Every metric against scikit-image / numpy in float64, per image; the SSIM map at every pixel, borders too."""
    target, mask = real
    pred = _degrade(kind, target, mask)
    tol = TOL[dtype]
    ours_map = ssim_map(pred.to(dtype), target.to(dtype)).double()
    ours = {k: v.double() for k, v in hole_metrics(pred.to(dtype), target.to(dtype), mask.to(dtype)).items()}
    for i in range(len(REAL)):
        t = target[i].permute(1, 2, 0).numpy()
        p = pred[i].permute(1, 2, 0).numpy()
        hole = mask[i, 0].numpy() > 0.5
        mssim, ref_map = _skimage_ssim(t, p)
        diff = np.abs(ours_map[i, 0].numpy() - ref_map)
        assert diff.max() < tol["map"], f"{REAL[i]}: SSIM map off by {diff.max():.2e} (border {_border(diff):.2e})"
        interior = ours_map[i, 0, BORDER:-BORDER, BORDER:-BORDER].mean().item()
        assert interior == pytest.approx(mssim, abs=tol["mean"])
        assert ours["ssim_hole"][i].item() == pytest.approx(ref_map[hole].mean(), abs=tol["mean"])
        assert ours["psnr"][i].item() == pytest.approx(peak_signal_noise_ratio(t, p, data_range=1.0), abs=tol["db"])
        ref_hole = peak_signal_noise_ratio(t[hole], p[hole], data_range=1.0)
        assert ours["psnr_hole"][i].item() == pytest.approx(ref_hole, abs=tol["db"])
        assert ours["l1_hole"][i].item() == pytest.approx(np.abs(p - t)[hole].mean(), abs=tol["l1"])


def _border(diff: np.ndarray) -> float:
    inner = np.zeros(diff.shape, dtype=bool)
    inner[BORDER:-BORDER, BORDER:-BORDER] = True
    return float(diff[~inner].max())


def test_border_check_catches_whole_sample_reflect(real, monkeypatch):
    """The comparison above can fail: torch's 'reflect' (d c b | a b c d, scipy's 'mirror') moves the border SSIM
    far beyond its tolerance while leaving the interior as it was."""
    target, mask = real
    pred = _degrade("OpenCV Telea", target, mask)

    def whole_sample(n: int, device: torch.device) -> torch.Tensor:
        i = torch.arange(-BORDER, n + BORDER, device=device).abs()
        return torch.where(i < n, i, 2 * n - 2 - i)

    monkeypatch.setattr(metrics, "_symmetric_index", whole_sample)
    ours = ssim_map(pred, target)[:, 0].numpy()
    diffs = [np.abs(ours[i] - _skimage_ssim(target[i].permute(1, 2, 0).numpy(),
                                            pred[i].permute(1, 2, 0).numpy())[1]) for i in range(len(REAL))]
    assert max(_border(d) for d in diffs) > 1e-2
    assert max(d[BORDER:-BORDER, BORDER:-BORDER].max() for d in diffs) < TOL[torch.float64]["map"]


def test_ssim_map_is_batched_and_precise_under_autocast(real):
    """One image at a time gives the batch's rows; half-precision input and a caller's autocast still give float32."""
    target, mask = real
    pred = _degrade("noise", target, mask)
    batch = ssim_map(pred, target)
    assert batch.shape == (len(REAL), 1, SIZE, SIZE) and batch.dtype == torch.float64
    for i in range(len(REAL)):
        assert torch.allclose(ssim_map(pred[i : i + 1], target[i : i + 1]), batch[i : i + 1], atol=1e-12)
    f32 = ssim_map(pred.float(), target.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(ssim_map(pred.float(), target.float()), f32)
    assert ssim_map(pred.half(), target.half()).dtype == torch.float32
