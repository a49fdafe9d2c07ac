"""The Ray adapter: flat config -> typed Config -> train(cfg, report); per-epoch tune.report and MLflow logging.

Every epoch's state goes to the run's storage with the report (`search.tune.checkpoints`), and a trial that Tune
restarts, on this node or another, resumes from it. Training images come from Ray's object store when the driver
put them there (read zero-copy, on every node), else from `data.root`. A diverged run raises, so Tune, Optuna and
MLflow record a failure.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from data.corrupt import apply_mask, composite
from data.images import ImageSet, fixed_masks
from search.core import faults
from search.core.config import Config
from search.core.grids import sample_grid
from search.core.train import Epoch, corruption_of, load_data, train
from search.tracking import runs as tracking
from search.tracking.runs import Tracking
from search.tune import checkpoints
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
    threads: int  # torch CPU threads per trial (the CPUs Ray reserved for it)
    probe: Probe | None = None  # the benchmark's CPU accounting plugs in here; the trainable knows nothing of it
    # (data_key(cfg), [ref]) when the driver put the images into the object store; the ref sits in a list so Ray
    # passes it along as a reference instead of resolving it when the context is sent.
    data: tuple[tuple, list] | None = None


def data_key(cfg: Config) -> tuple:
    """What decides which images a config trains on: trials whose key equals the driver's share its images."""
    d = cfg.data
    return (d.root, d.image_size, d.val_fraction, d.test_fraction, d.train_images, d.val_images)


def to_payload(sets: dict[str, ImageSet]) -> dict[str, tuple[np.ndarray, list[str]]]:
    """The images as numpy arrays, which Ray's object store hands to every reader without a copy."""
    return {split: (s.pixels.numpy(), s.names) for split, s in sets.items()}


def from_payload(payload: dict[str, tuple[np.ndarray, list[str]]]) -> dict[str, ImageSet]:
    # The arrays are read-only views of shared memory: torch warns once per array, and nothing writes into them
    # (ImageSet.batch copies what it selects).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return {split: ImageSet(pixels=torch.from_numpy(px), names=list(names)) for split, (px, names) in
                payload.items()}


def _data(cfg: Config, ctx: TrialContext) -> dict[str, ImageSet]:
    key = data_key(cfg)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # keep one set: a reused actor moves between trials of one study
        shared = ctx.data is not None and ctx.data[0] == key
        _DATA_CACHE[key] = from_payload(ray.get(ctx.data[1][0])) if shared else load_data(cfg)
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
    resume, warning = checkpoints.restored(required=("model", "epoch", "history"))
    # Where this (re)start runs: reported with every epoch (Optuna user attributes) and tagged on the MLflow run.
    runtime = ray.get_runtime_context()
    placement = {"node_id": runtime.get_node_id(),
                 "gpu_ids": ",".join(runtime.get_accelerator_ids().get("GPU", [])),
                 "start_epoch": int(resume["epoch"]) if resume else 0}
    tracking.set_tags(ctx.tracking, run_id, {**placement, **({"inpaint.warning": warning} if warning else {})})
    logged = tracking.last_logged_epoch(ctx.tracking, run_id)  # > 0 only for a trial restarted after a loss
    if resume is not None:
        # The driver may have died between our checkpoint and its record of that epoch: say it again
        # (Optuna ignores a repeated step); a trial that had already finished ends here.
        tune.report({**resume["history"][-1], "optuna_trial": number, **placement})
        if resume["epoch"] >= cfg.train.epochs:
            return
    data = _data(cfg, ctx)
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
        checkpoint = checkpoints.stage(epoch())
        if n > logged:  # an epoch trained again after a restart keeps its first record (as Optuna does)
            tracking.log_epoch(ctx.tracking, run_id, metrics, step=n)
            faults.hit("mlflow_logging")
            device = next(epoch.model.parameters()).device
            columns = _sample_columns(epoch.model, data["val"], val_masks, device)
            tracking.log_image(ctx.tracking, run_id, sample_grid(columns, f"trial {number}, epoch {n}"),
                               f"epoch_{n:03d}.png")
        bookkeeping_s += time.perf_counter() - t0
        times = {"time/setup_s": setup_s, "time/bookkeeping_s": bookkeeping_s, **extra()}
        # Tune copies the checkpoint into the run's storage before this returns; it may not return at all (the
        # scheduler can stop us here).
        tune.report({**metrics, "optuna_trial": number, **placement, **times}, checkpoint=checkpoint)

    result = train(cfg, report, data=data, resume=resume)
    if result.status == "diverged":
        raise TrialDiverged(f"diverged: {result.reason}")
