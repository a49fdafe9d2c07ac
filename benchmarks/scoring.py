"""Independent scoring for the quality checks: numpy + scikit-image + OpenCV, none of search.core.metrics.

The classical fills are redone here on purpose rather than taken from search.core.baselines, so that a fault in the
project's baseline code cannot shift the bar the model is checked against.

Given folders of `search.inpaint` outputs (each `NAME.png` beside its `NAME_mask.png`, white = hole) and the
untouched originals, it scores every model and, on the very same masks, OpenCV Telea / Navier-Stokes, biharmonic
and the push-pull pre-fill alone. Every method is composited the same way (known pixels from the original).
Besides the mean over images it reports paired per-image differences, because one flat image that a method fills
exactly (hole PSNR at the 100 dB cap) can move a mean over ~70 images by a dB.

The scores have the project's definitions, computed here independently (float64, data range 1):
- hole PSNR: 10 log10(1 / MSE), the MSE over the hole pixels' three channels, capped at MAX_PSNR = 100 dB;
- hole SSIM: skimage's structural_similarity(target, out, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=-1, full=True) full map (Wang et al. 2004: 11x11
  Gaussian window, scipy's half-sample symmetric 'reflect' borders), averaged over the channels, then over the hole
  pixels;
- hole L1: mean absolute error over the hole pixels' three channels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from skimage.metrics import structural_similarity
from skimage.restoration import inpaint_biharmonic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.prefill import pyramid_fill  # noqa: E402

CLASSICAL = ("telea", "navier-stokes", "biharmonic", "pre-fill alone")
MAX_PSNR = 100.0  # the project's cap: a perfect fill would be +inf


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def hole_scores(out: np.ndarray, target: np.ndarray, hole: np.ndarray) -> tuple[float, float, float]:
    """Hole PSNR, hole SSIM and hole L1 of one (H, W, 3) result, as the module docstring defines them."""
    diff = (out - target)[hole]
    mse = float(np.mean(diff**2))
    psnr = min(MAX_PSNR, 10 * np.log10(1.0 / max(mse, 10 ** (-MAX_PSNR / 10))))
    # Wang et al.'s settings, not skimage's defaults (a 7x7 uniform window with sample covariances).
    _, ssim_full = structural_similarity(target, out, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=1.0, channel_axis=-1, full=True)
    return psnr, float(ssim_full.mean(axis=-1)[hole].mean()), float(np.abs(diff).mean())


def classical(image: np.ndarray, hole: np.ndarray) -> dict[str, np.ndarray]:
    u8 = (image * 255).round().astype(np.uint8)
    m8 = hole.astype(np.uint8) * 255
    masked = u8 * (~hole)[..., None]
    t = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    m = torch.from_numpy(hole)[None, None].float()
    pre = pyramid_fill(t * (1 - m), m)[0].permute(1, 2, 0).double().numpy()
    return {
        "telea": cv2.inpaint(masked, m8, 3, cv2.INPAINT_TELEA) / 255.0,
        "navier-stokes": cv2.inpaint(masked, m8, 3, cv2.INPAINT_NS) / 255.0,
        "biharmonic": inpaint_biharmonic(image * (~hole)[..., None], hole, channel_axis=-1),
        "pre-fill alone": pre,
    }


def score(outputs: dict[str, Path], unseen: Path) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """Mean hole scores per method (the models in `outputs`, name -> folder, and the classical methods on the first
    model's masks), and every method's per-image hole PSNR in the same image order."""
    first = next(iter(outputs.values()))
    names = [p.name for p in sorted(first.glob("*.png")) if not p.stem.endswith("_mask")]
    if not names:
        raise SystemExit(f"no outputs in {first}")
    sources = {s.stem: s for s in unseen.iterdir()}
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for name in names:
        stem = Path(name).stem
        target = read(sources[stem])
        hole = np.asarray(Image.open(first / f"{stem}_mask.png").convert("L")) >= 128
        for folder in outputs.values():  # every model must have been run on the same holes
            if not np.array_equal(np.asarray(Image.open(folder / f"{stem}_mask.png").convert("L")) >= 128, hole):
                raise SystemExit(f"{folder / stem}: its mask differs from {first / stem}'s: use the same --mask-seed")
        outs = {m: read(folder / name) for m, folder in outputs.items()}
        outs.update(classical(target, hole))
        for method, out in outs.items():
            out = np.where(hole[..., None], out, target)
            rows.setdefault(method, []).append(hole_scores(out, target, hole))
    means = {m: dict(zip(("psnr_hole", "ssim_hole", "l1_hole"), np.mean(v, axis=0).tolist(), strict=True))
             | {"images": len(v)} for m, v in rows.items()}
    return means, {m: [r[0] for r in v] for m, v in rows.items()}


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Per-image hole-PSNR differences a - b: mean, median, share of images where a is better."""
    d = np.asarray(a) - np.asarray(b)
    return {"mean": float(d.mean()), "median": float(np.median(d)), "better": float((d > 0).mean())}


def print_table(means: dict[str, dict[str, float]], pairs: dict[str, dict[str, float]]) -> None:
    images = next(iter(means.values()))["images"]
    print(f"{'method':<16}{'hole PSNR':>10}{'hole SSIM':>10}{'hole L1':>9}   ({images} unseen images)")
    for method, r in sorted(means.items(), key=lambda kv: -kv[1]["psnr_hole"]):
        print(f"{method:<16}{r['psnr_hole']:>10.2f}{r['ssim_hole']:>10.3f}{r['l1_hole']:>9.4f}")
    print("per-image hole PSNR differences:")
    for pair, r in pairs.items():
        print(f"  {pair:<28} mean {r['mean']:+.2f} dB, median {r['median']:+.2f} dB, better on {r['better']:.0%}")
