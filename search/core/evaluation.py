"""A model beside the classical baselines on a folder's held-out test split, scored by the one metric path.

Every method is scored on the same test images with the same fixed, seeded holes (`data.images.TEST_MASK_SEED`):
hole PSNR / SSIM / L1 and whole-image PSNR, per-image means. Used by `search.evaluate` and `search.retrain_best`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from data.corrupt import apply_mask, composite
from data.images import TEST_MASK_SEED, DataError, fixed_masks, load_splits
from search.core.baselines import BASELINES
from search.core.config import Config
from search.core.grids import sample_grid
from search.core.progress import Progress
from search.core.train import corruption_of, score


def table(results: dict[str, dict[str, float]]) -> str:
    lines = [f"{'method':<24} {'hole PSNR':>10} {'hole SSIM':>10} {'hole L1':>9} {'whole PSNR':>11}"]
    for name, m in results.items():
        lines.append(f"{name:<24} {m['psnr_hole']:>10.2f} {m['ssim_hole']:>10.3f} {m['l1_hole']:>9.4f} "
                     f"{m['psnr']:>11.2f}")
    return "\n".join(lines)


def compare(model: torch.nn.Module, cfg: Config, root: Path, images: int, device: torch.device, out: Path) -> dict:
    """Score `model` and every baseline on the test split of `root`; print and save the table and comparison."""
    sets, report = load_splits(root, cfg.data.image_size, cfg.data.val_fraction, cfg.data.test_fraction,
                               {"train": 0, "val": 0, "test": images}, cfg.data.workers, Progress("decoding"))
    for line in report.skipped_lines():
        print(f"evaluate: {line}")
    test = sets["test"]
    if len(test) == 0:
        raise DataError(f"the test split of {root} is empty (test fraction {cfg.data.test_fraction}); add images")
    masks = fixed_masks(corruption_of(cfg), TEST_MASK_SEED, len(test), test.size)
    model.eval()
    methods = {"model": lambda image, mask: model(apply_mask(image, mask)), **BASELINES}
    results = {name: score(fn, test, masks, device) for name, fn in methods.items()}
    out.mkdir(parents=True, exist_ok=True)
    text = table(results)
    (out / "table.txt").write_text(text + "\n")
    # Comparison: masked input | Telea | model | target, for a few fixed test images.
    image = test.batch(list(range(min(4, len(test)))), device)
    mask = masks[: len(image)].to(device)
    with torch.no_grad():
        telea = composite(BASELINES["OpenCV Telea"](image, mask), image, mask)
        pred = composite(model(apply_mask(image, mask)).float(), image, mask)
    grid = sample_grid({"masked": image * (1 - mask), "Telea": telea, "model": pred, "target": image})
    grid.save(out / "comparison.png")
    print(f"evaluate: {len(test)} test images of {root} at {test.size}x{test.size}, {cfg.data.n_holes} holes of "
          f"{cfg.data.hole_size}px (seed {TEST_MASK_SEED}); {len(report.skipped)} unreadable skipped")
    print(text)
    print(f"evaluate: comparison image (masked | Telea | model | target) in {out / 'comparison.png'}")
    return {"data": str(root), "images": len(test), "results": results, "comparison": str(out / "comparison.png"),
            "table": str(out / "table.txt")}


def metrics_of(summary: dict) -> dict[str, float]:
    """Flat MLflow metric names, e.g. test/opencv_telea/psnr_hole."""
    flat = {}
    for method, metrics in summary["results"].items():
        slug = method.lower().replace(" ", "_").replace("-", "_")
        flat.update({f"test/{slug}/{k}": v for k, v in metrics.items()})
    return flat
