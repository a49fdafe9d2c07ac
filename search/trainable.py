"""The Ray adapter: flat config -> typed Config -> train(cfg, report); per-epoch tune.report and MLflow logging.

Each trial keeps one checkpoint file of its own (overwritten every epoch, atomically) and resumes from it when
Tune restarts the trial after an interruption; a diverged run raises, so Tune, Optuna and MLflow record a failure.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray import tune

from data.corrupt import apply_mask, composite
from data.images import ImageSet
from search import tracking
from search.config import Config
from search.optuna_search import OPTUNA_NUMBER_KEY
from search.tracking import Tracking, trial_number
from search.train import Epoch, corruption_of, fixed_masks, load_data, save_checkpoint, train

SAMPLE_IMAGES = 4
_DATA_CACHE: dict[tuple, dict[str, ImageSet]] = {}  # read-only images, shared by trials of a reused actor


class TrialDiverged(RuntimeError):
    """Raised so the trial ends as an error whose message is the reason."""


@dataclass(frozen=True)
class TrialContext:
    base: dict[str, Any]  # flat keys every trial shares: study fixed values, budget, data root, device
    tracking: Tracking
    checkpoint_dir: str  # absolute
    threads: int  # torch CPU threads per trial (the CPUs Ray reserved for it)


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


def _sample_grid(model: torch.nn.Module, val: ImageSet, masks: torch.Tensor, device: torch.device):
    was_training = model.training
    model.eval()
    with torch.no_grad():
        image = val.batch(list(range(min(SAMPLE_IMAGES, len(val)))), device)
        mask = masks[: len(image)].to(device)
        pred = model(apply_mask(image, mask).contiguous(memory_format=torch.channels_last)).float()
    model.train(was_training)
    return tracking.sample_grid(image * (1 - mask), composite(pred, image, mask), image)


def machine_cpu_s() -> float:
    """CPU seconds all processes of this machine have used so far (Linux /proc/stat; 0 elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def trainable(config: dict[str, Any], ctx: TrialContext) -> None:
    """One trial. `config` holds the searched flat keys (plus the Optuna trial number)."""
    entered, cpu_entered, machine_entered = time.perf_counter(), time.process_time(), machine_cpu_s()
    torch.set_num_threads(max(1, ctx.threads))
    number = int(config.get(OPTUNA_NUMBER_KEY, -1))
    searched = {k: v for k, v in config.items() if not k.startswith("_")}
    flat = {**Config().to_flat(), **ctx.base, **searched}
    # The run exists before the config is checked, so a trial with an invalid config still gets its FAILED run.
    run_id = tracking.child_run(ctx.tracking, tune.get_context().get_trial_id(), number, searched, flat)
    cfg = Config.from_flat(flat).validate()
    path = checkpoint_path(ctx, number)
    resume = torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None
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
    # (checkpoint, MLflow, sample grid), reported with every epoch for `search.bench` and the curious, with the
    # worker's CPU time (all threads) and what all other processes of the machine used meanwhile (Ray's, the
    # driver's, other trials'): on a small machine that is CPU the trial did not get.
    bookkeeping_s = 0.0
    setup_s = time.perf_counter() - entered

    def report(metrics: dict[str, float], epoch: Epoch) -> None:
        nonlocal bookkeeping_s
        t0 = time.perf_counter()
        n = int(metrics["epoch"])
        save_checkpoint(epoch(), path)
        tracking.log_epoch(ctx.tracking, run_id, metrics, step=n)
        device = next(epoch.model.parameters()).device
        grid = _sample_grid(epoch.model, data["val"], val_masks, device)
        tracking.log_image(ctx.tracking, run_id, grid, f"epoch_{n:03d}.png")
        bookkeeping_s += time.perf_counter() - t0
        cpu = time.process_time() - cpu_entered
        times = {"time/setup_s": setup_s, "time/bookkeeping_s": bookkeeping_s, "time/cpu_s": cpu,
                 "time/others_cpu_s": machine_cpu_s() - machine_entered - cpu}
        tune.report({**metrics, "optuna_trial": number, **times})  # may not return: the scheduler can stop us here

    result = train(cfg, report, data=data, resume=resume)
    if result.status == "diverged":
        raise TrialDiverged(f"diverged: {result.reason}")


class CheckpointJanitor(tune.Callback):
    """Deletes the checkpoints of pruned and failed trials; full-budget trials keep theirs."""

    def __init__(self, ctx: TrialContext, max_epochs: int):
        self.ctx, self.max_epochs = ctx, max_epochs

    def on_trial_complete(self, iteration, trials, trial, **info):
        if (trial.last_result or {}).get("epoch", 0) < self.max_epochs:
            checkpoint_path(self.ctx, trial_number(trial)).unlink(missing_ok=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        checkpoint_path(self.ctx, trial_number(trial)).unlink(missing_ok=True)
