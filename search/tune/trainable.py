"""The Ray adapter: flat config -> typed Config -> train(cfg, report); per-epoch tune.report and MLflow logging.

Each trial keeps one checkpoint file of its own (overwritten every epoch, atomically) and resumes from it when
Tune restarts the trial after an interruption; a diverged run raises, so Tune, Optuna and MLflow record a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray import tune

from data.corrupt import apply_mask, composite
from data.images import ImageSet, fixed_masks
from search.core.checkpoint import load_checkpoint, save_checkpoint
from search.core.config import Config
from search.core.grids import sample_grid
from search.core.train import Epoch, corruption_of, load_data, train
from search.tracking import runs as tracking
from search.tracking.runs import Tracking
from search.tune.searcher import OPTUNA_NUMBER_KEY

SAMPLE_IMAGES = 4
# Extra per-epoch figures: called once when a trial starts; what it returns is called at every report.
Probe = Callable[[], Callable[[], dict[str, float]]]
_DATA_CACHE: dict[tuple, dict[str, ImageSet]] = {}  # read-only images, shared by trials of a reused actor


class TrialDiverged(RuntimeError):
    """Raised so the trial ends as an error whose message is the reason."""


@dataclass(frozen=True)
class TrialContext:
    base: dict[str, Any]  # flat keys every trial shares: study fixed values, budget, data root, device
    tracking: Tracking
    checkpoint_dir: str  # absolute
    threads: int  # torch CPU threads per trial (the CPUs Ray reserved for it)
    probe: Probe | None = None  # the benchmark's CPU accounting plugs in here; the trainable knows nothing of it


def checkpoint_path(ctx: TrialContext, number: int) -> Path:
    # By Optuna trial number: after a crash Ray may re-run an Optuna trial under a new Ray trial id.
    return Path(ctx.checkpoint_dir) / f"trial_{number:04d}.pt"


def _data(cfg: Config) -> dict[str, ImageSet]:
    d = cfg.data
    key = (d.root, d.image_size, d.val_fraction, d.test_fraction, d.train_images, d.val_images)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # keep one set: a reused actor moves between trials of one study
        _DATA_CACHE[key] = load_data(cfg)
    return _DATA_CACHE[key]


def _sample_columns(
    model: torch.nn.Module, val: ImageSet, masks: torch.Tensor, device: torch.device,
) -> dict[str, torch.Tensor]:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        image = val.batch(list(range(min(SAMPLE_IMAGES, len(val)))), device)
        mask = masks[: len(image)].to(device)
        pred = model(apply_mask(image, mask).contiguous(memory_format=torch.channels_last)).float()
    model.train(was_training)
    return {"masked": image * (1 - mask), "output": composite(pred, image, mask), "target": image}


def trainable(config: dict[str, Any], ctx: TrialContext) -> None:
    """One trial. `config` holds the searched flat keys (plus the Optuna trial number)."""
    entered = time.perf_counter()
    extra = ctx.probe() if ctx.probe is not None else dict
    torch.set_num_threads(max(1, ctx.threads))
    number = int(config.get(OPTUNA_NUMBER_KEY, -1))
    searched = {k: v for k, v in config.items() if not k.startswith("_")}
    flat = {**Config().to_flat(), **ctx.base, **searched}
    # The run exists before the config is checked, so a trial with an invalid config still gets its FAILED run.
    run_id = tracking.child_run(ctx.tracking, tune.get_context().get_trial_id(), number, searched, flat)
    cfg = Config.from_flat(flat).validate()
    path = checkpoint_path(ctx, number)
    resume = load_checkpoint(path, required=("model", "epoch", "history")) if path.exists() else None
    if resume is not None:
        # The driver may have died between our checkpoint and its record of that epoch: say it again
        # (Optuna ignores a repeated step); a trial that had already finished ends here.
        tune.report({**resume["history"][-1], "optuna_trial": number})
        if resume["epoch"] >= cfg.train.epochs:
            return
    data = _data(cfg)
    val_masks = fixed_masks(corruption_of(cfg), cfg.train.val_mask_seed, min(SAMPLE_IMAGES, len(data["val"])),
                            data["val"].size)

    # What a trial costs over a bare train(): its set-up (MLflow run, data, checkpoint) and per-epoch bookkeeping
    # (checkpoint, MLflow, sample grid), reported with every epoch for `search.bench` and the curious.
    bookkeeping_s = 0.0
    setup_s = time.perf_counter() - entered

    def report(metrics: dict[str, float], epoch: Epoch) -> None:
        nonlocal bookkeeping_s
        t0 = time.perf_counter()
        n = int(metrics["epoch"])
        save_checkpoint(epoch(), path)
        tracking.log_epoch(ctx.tracking, run_id, metrics, step=n)
        device = next(epoch.model.parameters()).device
        columns = _sample_columns(epoch.model, data["val"], val_masks, device)
        tracking.log_image(ctx.tracking, run_id, sample_grid(columns, f"trial {number}, epoch {n}"),
                           f"epoch_{n:03d}.png")
        bookkeeping_s += time.perf_counter() - t0
        times = {"time/setup_s": setup_s, "time/bookkeeping_s": bookkeeping_s, **extra()}
        tune.report({**metrics, "optuna_trial": number, **times})  # may not return: the scheduler can stop us here

    result = train(cfg, report, data=data, resume=resume)
    if result.status == "diverged":
        raise TrialDiverged(f"diverged: {result.reason}")
