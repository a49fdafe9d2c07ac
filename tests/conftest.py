"""Shared fixtures: small real images (from the embedded default set) and a tiny config for fast training."""

from __future__ import annotations

import pytest
import torch

from data.images import DEFAULT_IMAGES, ImageSet, load_splits
from search.core.checkpoint import save_checkpoint
from search.core.config import Config
from search.core.train import train

pytest_plugins = ["servers"]  # tests/servers.py: PostgreSQL and MLflow server fixtures


@pytest.fixture(scope="session")
def small_images() -> ImageSet:
    """24 real embedded images at 64x64 (all in one split)."""
    sets, _ = load_splits(DEFAULT_IMAGES, size=64, val_fraction=0.0, test_fraction=0.0, limits={"train": 24})
    return sets["train"]


@pytest.fixture()
def tiny_config() -> Config:
    """A config that trains in seconds on a CPU: 64x64 images, 16x16 holes, a small U-Net, fp32."""
    torch.set_num_threads(2)
    cfg = Config()
    cfg.model.depth, cfg.model.width = 2, 8
    cfg.data.image_size, cfg.data.hole_size = 64, 16
    cfg.train.device, cfg.train.precision = "cpu", "fp32"
    cfg.train.batch_size, cfg.train.epochs = 4, 2
    return cfg


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, small_images):
    """A real checkpoint: a small pre-fill + residual U-Net trained one epoch at 64x64."""
    cfg = Config()
    cfg.model.depth, cfg.model.width, cfg.model.prefill, cfg.model.residual = 3, 8, "pyramid", True
    cfg.data.image_size, cfg.data.hole_size = 64, 16
    cfg.train.device, cfg.train.precision, cfg.train.batch_size, cfg.train.epochs = "cpu", "fp32", 4, 1
    cfg.loss.w_perceptual = 0.0
    saved = {}
    train(cfg, lambda m, ep: saved.update(ckpt=ep()), data={"train": small_images, "val": small_images})
    return save_checkpoint(saved["ckpt"], tmp_path_factory.mktemp("ckpt") / "model.pt")
