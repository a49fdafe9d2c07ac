"""THE training loop: train(cfg, report), evaluate() and score(); plain PyTorch, knows nothing of Ray, Optuna or MLflow.

Used by everything that trains: the sanity tools, the search trials and the retrain of the best setting.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from data.corrupt import Corruption, apply_mask, composite, random_masks
from data.images import DEFAULT_IMAGES, ImageSet, fixed_masks, load_splits
from losses.composite import CompositeLoss
from models.unet import UNet
from search.core import faults
from search.core.config import Config
from search.core.device import autocast, resolve_device, resolve_precision
from search.core.metrics import hole_metrics
from search.core.schedule import make_scheduler

CHECK_EVERY = 16  # steps between reads of the divergence flag (the only host-device sync inside an epoch)


class Epoch:
    """The second argument of report(): call it for a checkpoint dict; `.model` is the live model."""

    def __init__(self, model: torch.nn.Module, make_checkpoint: Callable[[], dict]):
        self.model, self._make = model, make_checkpoint

    def __call__(self) -> dict:
        return self._make()


# report(metrics, epoch) is called after every epoch; returning True stops training.
Report = Callable[[dict[str, float], Epoch], Any]


@dataclass
class TrainResult:
    status: str  # completed | diverged | stopped
    reason: str
    epochs: int
    steps: int
    seconds: float
    model: torch.nn.Module
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def load_data(cfg: Config, progress: Callable[[int, int], None] | None = None) -> dict[str, ImageSet]:
    """The train and validation sets a config asks for (the embedded default images when data.root is empty)."""
    d = cfg.data
    root = Path(d.root) if d.root else DEFAULT_IMAGES
    limits = {"val": d.val_images, "test": 0}
    if d.train_images:
        limits["train"] = d.train_images
    sets, report = load_splits(root, d.image_size, d.val_fraction, d.test_fraction, limits, d.workers, progress)
    print(f"data: {report.summary()}", file=sys.stderr)
    for line in report.skipped_lines():
        print(f"data: {line}", file=sys.stderr)
    return sets


def corruption_of(cfg: Config) -> Corruption:
    return Corruption(cfg.data.n_holes, cfg.data.hole_size, cfg.data.image_size)


@torch.no_grad()
def score(
    fill: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], images: ImageSet, masks: torch.Tensor,
    device: torch.device, batch_size: int = 16,
) -> dict[str, float]:
    """Per-image mean of hole PSNR / SSIM / L1 and whole-image PSNR of `fill(image, mask)`, composited with the
    known pixels, on fixed masks: the one metric path for models and classical baselines alike."""
    sums: dict[str, float] = {}
    for idx, image in images.batches(batch_size, device):
        mask = masks[idx].to(device)
        out = composite(fill(image, mask).float(), image, mask)
        for k, v in hole_metrics(out, image, mask).items():
            sums[k] = sums.get(k, 0.0) + float(v.sum())
    n = max(len(images), 1)
    return {k: v / n for k, v in sums.items()}


def evaluate(
    model: torch.nn.Module, images: ImageSet, masks: torch.Tensor, device: torch.device,
    precision: str = "fp32", batch_size: int = 16, prefix: str = "val/",
) -> dict[str, float]:
    """`score` of a model (in eval mode, under the run's precision), keys prefixed, e.g. `val/psnr_hole`."""
    was_training = model.training
    model.eval()

    def fill(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            return model(apply_mask(image, mask))

    metrics = score(fill, images, masks, device, batch_size)
    model.train(was_training)
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def train(
    cfg: Config, report: Report | None = None, data: dict[str, ImageSet] | None = None,
    resume: dict | None = None, progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train one U-Net as `cfg` says; evaluate and report after every epoch.

    A non-finite loss or gradient norm ends the run as `diverged` within CHECK_EVERY steps and before the epoch's
    report, so no checkpoint ever holds NaNs (the returned model of a diverged run may).

    `progress(step_in_epoch, steps_per_epoch)` is called after every step (for long epochs)."""
    cfg.validate()
    t0 = time.perf_counter()
    torch.manual_seed(cfg.train.seed)
    gen = torch.Generator().manual_seed(cfg.train.seed)  # batch order and training holes
    device = resolve_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, device)
    data = data if data is not None else load_data(cfg)
    train_set, val_set = data["train"], data.get("val", data["train"])
    if len(train_set) == 0 or (cfg.train.eval_every and len(val_set) == 0):
        raise ValueError(
            f"need training and validation images, got {len(train_set)} and {len(val_set)}: "
            "add images or raise data.val_fraction"
        )
    corruption = corruption_of(cfg)
    size = train_set.size
    val_masks = fixed_masks(corruption, cfg.train.val_mask_seed, len(val_set), size)
    train_masks = fixed_masks(corruption, cfg.train.train_mask_seed, len(train_set), size) \
        if cfg.train.fixed_train_masks else None

    memory = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = UNet(cfg.model).to(device, memory_format=memory)
    loss_fn = CompositeLoss(cfg.loss).to(device, memory_format=memory)
    o = cfg.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
    bs = cfg.train.batch_size
    steps_per_epoch = cfg.train.steps_per_epoch or math.ceil(len(train_set) / bs)
    total_steps = steps_per_epoch * cfg.train.epochs
    scheduler = make_scheduler(optimizer, cfg.sched, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    start_epoch, step, history = 0, 0, []
    if resume is not None:
        if resume.get("steps_per_epoch", steps_per_epoch) != steps_per_epoch:
            raise ValueError(
                f"the checkpoint was trained with {resume['steps_per_epoch']} steps per epoch ({resume.get('images')} "
                f"training images), this run has {steps_per_epoch} ({len(train_set)}): the data changed since; "
                "start again from scratch or restore the data")
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        gen.set_state(resume["rng"])
        start_epoch, step, history = resume["epoch"], resume["step"], list(resume.get("history", []))

    def make_checkpoint() -> dict:
        # A snapshot on the CPU: state_dict() returns live tensors that the next step would overwrite.
        return copy.deepcopy({
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "config": cfg.to_flat(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": gen.get_state(),
            "epoch": epoch + 1, "step": step, "history": history, "steps_per_epoch": steps_per_epoch,
            "images": len(train_set),
        })

    def batches():
        # Cycle through shuffled passes until the epoch's step count is reached.
        while True:
            yield from train_set.batches(bs, device, shuffle=True, generator=gen)

    stream = batches()
    model.train()
    forward = torch.compile(model) if cfg.train.compile else model
    first_bad, bad_loss = torch.tensor(-1, device=device), torch.tensor(0.0, device=device)
    for epoch in range(start_epoch, cfg.train.epochs):
        t_epoch = time.perf_counter()
        sums: dict[str, torch.Tensor] = {}
        for i in range(steps_per_epoch):
            idx, image = next(stream)
            if train_masks is not None:
                mask = train_masks[idx].to(device)
            else:
                mask = random_masks(corruption, image.shape[0], size, device, gen)
            image = image.contiguous(memory_format=memory)
            with autocast(device, precision):
                pred = forward(apply_mask(image, mask).contiguous(memory_format=memory))
                loss, terms = loss_fn(pred, image, mask)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            finite = torch.isfinite(loss.detach())
            if o.grad_clip > 0:
                scaler.unscale_(optimizer)
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
                if precision != "fp16":  # fp16: GradScaler skips steps with overflowing gradients by design
                    finite &= torch.isfinite(norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            # The first bad step, kept on the device: reading it every step would stall a GPU once per step.
            new_bad = ~finite & (first_bad < 0)
            first_bad = torch.where(new_bad, step, first_bad)
            bad_loss = torch.where(new_bad, loss.detach().float(), bad_loss)
            step += 1
            faults.hit("mid_epoch")
            check = step % CHECK_EVERY == 0 or i + 1 == steps_per_epoch
            if check and (bad := int(first_bad)) >= 0:
                return _diverged(f"non-finite loss or gradient norm at step {bad} (loss {float(bad_loss)})",
                                 epoch, step, t0, model, history)
            for k, v in {"loss": loss.detach(), **terms}.items():
                sums[k] = sums.get(k, 0.0) + v.float()
            if progress is not None:
                progress(i + 1, steps_per_epoch)
        train_seconds = time.perf_counter() - t_epoch
        metrics: dict[str, float] = {"epoch": epoch + 1, "step": step}
        metrics.update({f"train/{k}": float(v) / steps_per_epoch for k, v in sums.items()})
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics["train/images_per_s"] = steps_per_epoch * bs / max(train_seconds, 1e-9)
        every = cfg.train.eval_every
        if every and ((epoch + 1) % every == 0 or epoch + 1 == cfg.train.epochs):
            metrics.update(evaluate(model, val_set, val_masks, device, precision))
        history.append(metrics)
        if report is not None and report(metrics, Epoch(model, make_checkpoint)):
            return TrainResult("stopped", "stopped by report", epoch + 1, step, time.perf_counter() - t0,
                               model, history)
    return TrainResult("completed", "", cfg.train.epochs, step, time.perf_counter() - t0, model, history)


def _diverged(reason: str, epoch: int, step: int, t0: float, model, history) -> TrainResult:
    return TrainResult("diverged", reason, epoch, step, time.perf_counter() - t0, model, history)
