"""The one training loop: it learns, reports, checkpoints, resumes exactly and stops on divergence."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from data.images import ImageSet
from search.core.checkpoint import load_model, save_checkpoint
from search.core.config import Config
from search.core.schedule import lr_factor
from search.core.train import train


@pytest.fixture()
def data(small_images):
    return {"train": small_images, "val": small_images}


def test_short_training_run_lowers_the_loss(tiny_config, small_images):
    # One fixed batch with fixed holes, so epoch means are comparable (no batch-to-batch noise).
    batch = ImageSet(small_images.pixels[:4], small_images.names[:4])
    cfg = tiny_config
    cfg.model.width = 16
    cfg.train.fixed_train_masks = True
    cfg.train.val_mask_seed = cfg.train.train_mask_seed  # judge on the holes it trains on
    cfg.train.epochs, cfg.train.steps_per_epoch, cfg.optim.lr = 8, 5, 3e-3
    first = {}

    def report(m, _):
        first.setdefault("m", m)

    result = train(cfg, report, data={"train": batch, "val": batch})
    assert result.status == "completed" and result.steps == 40
    start, end = first["m"], result.final
    assert end["train/loss"] < 0.8 * start["train/loss"]
    assert end["val/l1_hole"] < 0.8 * start["val/l1_hole"]
    assert end["train/perceptual"] > 0  # the pretrained perceptual term was active


def test_report_sees_every_metric_each_epoch(tiny_config, data):
    seen = []
    train(tiny_config, lambda m, _: seen.append(m), data=data)
    assert len(seen) == tiny_config.train.epochs
    for key in ("val/psnr_hole", "val/ssim_hole", "val/l1_hole", "val/psnr", "lr", "train/loss", "train/l1_hole",
                "train/perceptual", "train/tv", "epoch"):
        assert key in seen[-1], key
        assert math.isfinite(seen[-1][key]), key
    # Whole-image PSNR of a composite is far above hole PSNR: only ~6% of pixels are predicted.
    assert seen[-1]["val/psnr"] > seen[-1]["val/psnr_hole"] + 5


def test_report_can_stop_training(tiny_config, data):
    result = train(tiny_config, lambda m, _: True, data=data)
    assert result.status == "stopped" and result.epochs == 1


def test_non_finite_loss_ends_the_run_as_diverged(tiny_config, data):
    tiny_config.optim.lr = float("inf")
    tiny_config.optim.grad_clip = 0.0
    result = train(tiny_config, data=data)
    assert result.status == "diverged"
    assert "nan" in result.reason or "inf" in result.reason
    assert result.steps < tiny_config.train.epochs * 6


def test_checkpoint_holds_the_flat_config_and_rebuilds_the_model(tiny_config, data, tmp_path):
    saved = {}
    result = train(tiny_config, lambda m, ckpt: saved.update(ckpt=ckpt()), data=data)
    path = save_checkpoint(saved["ckpt"], tmp_path / "ckpt.pt")
    model, cfg = load_model(path)
    assert saved["ckpt"]["config"] == tiny_config.to_flat()
    assert cfg.to_flat() == tiny_config.to_flat()
    x = torch.rand(2, 4, 64, 64)
    result.model.eval()
    assert torch.allclose(model(x), result.model(x.contiguous(memory_format=torch.channels_last)), atol=1e-5)


def test_resume_continues_exactly_where_it_stopped(tiny_config, data):
    full = train(tiny_config, data=data)
    saved = {}

    def stop_after_first(m, ckpt):
        saved["ckpt"] = ckpt()
        return True

    train(tiny_config, stop_after_first, data=data)
    resumed = train(tiny_config, data=data, resume=saved["ckpt"])
    assert resumed.status == "completed" and resumed.epochs == tiny_config.train.epochs
    assert len(resumed.history) == tiny_config.train.epochs
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("kind", ["constant", "cosine", "step", "onecycle"])
def test_schedules_with_warmup(kind):
    cfg = Config().sched
    cfg.kind, cfg.warmup_fraction = kind, 0.1
    f = [lr_factor(cfg, s, 100) for s in range(100)]
    assert all(0 < v <= 1.0 + 1e-9 for v in f)
    assert f[0] < f[9] and max(f) == pytest.approx(1.0, abs=0.02)  # warm-up rises to the base rate
    if kind == "constant":
        assert f[-1] == 1.0
    elif kind == "step":
        assert f[-1] == pytest.approx(cfg.step_gamma**2)
    else:
        assert f[-1] == pytest.approx(cfg.min_lr_ratio, rel=1e-3)


def test_warmup_is_optional_and_range_sweeps_up():
    cfg = Config().sched
    assert lr_factor(cfg, 0, 100) == 1.0
    cfg.kind, cfg.min_lr_ratio = "range", 1e-4
    assert lr_factor(cfg, 0, 50) == pytest.approx(1e-4) and lr_factor(cfg, 49, 50) == pytest.approx(1.0)


def test_fast_path_reaches_the_fp32_quality(tiny_config, data):
    """Equal quality: the fast path's validation metrics after a fixed short run stay within 0.5 dB hole PSNR and
    0.02 hole SSIM of the plain fp32 path (bf16 rounding and compiled kernels change the numbers a little)."""
    tiny_config.loss.w_perceptual = 0.05  # the VGG term runs under autocast too
    tiny_config.model.prefill, tiny_config.model.residual = "pyramid", True
    tiny_config.train.epochs, tiny_config.train.steps_per_epoch, tiny_config.optim.lr = 2, 6, 2e-3
    reference = copy.deepcopy(tiny_config)
    reference.train.precision, reference.train.channels_last = "fp32", False
    tiny_config.train.precision, tiny_config.train.channels_last = "bf16", True
    slow, quick = train(reference, data=data).final, train(tiny_config, data=data).final
    assert slow["val/psnr_hole"] > 0 and quick["val/psnr_hole"] > 0
    assert abs(quick["val/psnr_hole"] - slow["val/psnr_hole"]) < 0.5, (quick, slow)
    assert abs(quick["val/ssim_hole"] - slow["val/ssim_hole"]) < 0.02, (quick, slow)
