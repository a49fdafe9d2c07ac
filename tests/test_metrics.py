"""Evaluation metrics: known values on constructed errors, and the library boundaries of DESIGN.md."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from search.core.metrics import MAX_PSNR, hole_metrics, l1_hole, psnr_hole, psnr_image, ssim_hole

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"ray", "optuna", "mlflow", "search", "studies"}


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


@pytest.mark.parametrize("package", ["models", "losses", "data"])
def test_pure_libraries_import_no_framework(package):
    """Static: no import statement names ray, optuna, mlflow, search or studies."""
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.relative_to(ROOT)} imports {name}"


def test_pure_libraries_load_no_framework_at_runtime():
    """Dynamic: importing every module of the pure libraries pulls in none of them."""
    modules = [f"{p.parent.name}.{p.stem}" for pkg in ("models", "losses", "data") for p in (ROOT / pkg).glob("*.py")]
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {FORBIDDEN!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
