"""Learning-rate schedules as a multiplier of the base rate: constant, cosine, step, one-cycle, with warm-up."""

from __future__ import annotations

import math

import torch

from search.core.config import SchedConfig


def lr_factor(cfg: SchedConfig, step: int, total: int) -> float:
    """Multiplier of optim.lr at `step` (0-based) of `total` steps."""
    total = max(total, 1)
    warm = int(cfg.warmup_fraction * total)
    if cfg.kind == "range":
        # LR range test: exponential sweep from lr * min_lr_ratio up to lr over all steps.
        return cfg.min_lr_ratio ** (1 - step / max(total - 1, 1))
    if cfg.kind == "onecycle":
        # One-cycle (Smith): warm up from lr/25 over the warm-up (30% when none is set), then cosine down.
        warm = warm or int(0.3 * total)
        if step < warm:
            return 1 / 25 + (1 - 1 / 25) * step / max(warm, 1)
        return _cosine(step - warm, total - warm, cfg.min_lr_ratio)
    if step < warm:
        # Linear warm-up from a small but non-zero rate, so the first step already moves.
        return (step + 1) / (warm + 1)
    if cfg.kind == "constant":
        return 1.0
    if cfg.kind == "cosine":
        return _cosine(step - warm, total - warm, cfg.min_lr_ratio)
    if cfg.kind == "step":
        every = max(1, int(cfg.step_every * total))
        return cfg.step_gamma ** ((step - warm) // every)
    raise ValueError(f"unknown schedule {cfg.kind!r}")


def _cosine(step: int, span: int, floor: float) -> float:
    t = min(step / max(span - 1, 1), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedConfig, total: int,
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step, total))
