"""`python -m search.overfit`: the method's first sanity check, overfit one batch of 8 images with fixed holes.

A model and loss that cannot drive the hole error down on 8 images with the same holes every step have a bug;
nothing else should run before this passes. Trains with the one training loop (search/train.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from data.corrupt import scaled_hole
from data.images import DEFAULT_IMAGES, DataError, fixed_masks, load_splits
from models.unet import UNet
from search.cli import add_common, at_least, fail, sanity_size, set_overrides, write_json
from search.core.config import Config
from search.core.device import resolve_device, resolve_precision
from search.core.progress import Progress
from search.core.train import corruption_of, evaluate, train


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m search.overfit", description=__doc__.split("\n")[0])
    add_common(p)
    p.add_argument("--size", type=at_least(16), default=None,
                   help="image size; holes scale with it, 32 px at 256 (default: 256 on a GPU, 96 on a CPU)")
    p.add_argument("--images", type=at_least(1), default=8, help="batch size = number of images to overfit (default 8)")
    p.add_argument("--steps", type=at_least(1), default=100, help="training steps (default 100)")
    p.add_argument("--every", type=at_least(1), default=10, help="print the curve every N steps (default 10)")
    p.add_argument("--lr", type=at_least(0, float, above=True), default=1e-3,
                   help="learning rate (the method's overfit optimum, 1e-3)")
    p.add_argument("--min-ratio", type=at_least(0, float), default=3.0,
                   help="exit 1 unless hole L1 falls this many times (0: report only)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    cfg = Config()
    cfg.data.image_size = sanity_size(args.size, args.device)
    cfg.data.hole_size = scaled_hole(cfg.data.image_size)
    cfg.optim.lr = args.lr
    # Cosine decay from the peak: the last points of the curve settle instead of bouncing at a high rate.
    cfg.sched.kind, cfg.sched.min_lr_ratio = "cosine", 0.1
    cfg.train.device = args.device
    cfg.train.batch_size = args.images
    cfg.train.steps_per_epoch = args.every
    cfg.train.epochs = max(1, round(args.steps / args.every))
    cfg.train.fixed_train_masks = True
    # Validation = the training batch with its own fixed holes: the curve shows how well it is memorised.
    cfg.train.val_mask_seed = cfg.train.train_mask_seed
    set_overrides(cfg, args.set)
    cfg.validate()
    root = Path(args.data) if args.data else DEFAULT_IMAGES
    sets, report = load_splits(root, cfg.data.image_size, 0.0, 0.0, {"train": args.images}, cfg.data.workers,
                                  Progress("decoding images"))
    batch = sets["train"]
    if len(batch) < args.images:
        raise DataError(f"need {args.images} readable images under {root}, found {len(batch)}")
    device = resolve_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, device)
    print(f"overfit: {len(batch)} images from {root} ({len(report.skipped)} unreadable skipped) at "
          f"{cfg.data.image_size}x{cfg.data.image_size}, {cfg.data.n_holes} holes of {cfg.data.hole_size}px, "
          f"UNet depth {cfg.model.depth} width {cfg.model.width}, loss {cfg.loss.recon} x{cfg.loss.w_hole} hole "
          f"+ {cfg.loss.w_perceptual} perceptual (VGG16 {cfg.loss.vgg_weights}: {cfg.loss.perceptual_layers}) "
          f"+ {cfg.loss.w_tv} TV, lr {cfg.optim.lr:g}, {device} {precision}")
    masks = fixed_masks(corruption_of(cfg), cfg.train.train_mask_seed, len(batch), batch.size)
    # The initial error of the very model train() will start from (same seed, same init).
    torch.manual_seed(cfg.train.seed)
    initial = evaluate(UNet(cfg.model).to(device), batch, masks, device, precision)["val/l1_hole"]
    print(f"{'step':>6} {'loss':>9} {'hole L1':>9} {'perceptual':>10} {'s':>7}")
    print(f"{0:>6} {'':>9} {initial:>9.4f}")
    t0 = time.perf_counter()

    def report(m: dict, _ckpt) -> None:
        print(f"{int(m['step']):>6} {m['train/loss']:>9.4f} {m['val/l1_hole']:>9.4f} "
              f"{m.get('train/perceptual', float('nan')):>10.4f} {time.perf_counter() - t0:>7.1f}", flush=True)

    result = train(cfg, report, data={"train": batch, "val": batch})
    seconds = time.perf_counter() - t0
    final = result.final.get("val/l1_hole", float("nan"))
    ratio = initial / final if final > 0 else float("inf")
    print(f"overfit: hole L1 {initial:.4f} -> {final:.4f} ({ratio:.1f}x) in {result.steps} steps, {seconds:.0f} s")
    return {
        "status": result.status, "reason": result.reason, "initial_l1_hole": initial, "final_l1_hole": final,
        "ratio": ratio, "steps": result.steps, "seconds": seconds, "device": str(device), "precision": precision,
        "curve": [{k: m[k] for k in ("step", "train/loss", "val/l1_hole")} for m in result.history],
        "config": cfg.to_flat(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        figures = run(args)
    except (DataError, ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        return fail("overfit", exc)
    if args.json:
        write_json(args.json, figures)
    if figures["status"] != "completed":
        print(f"overfit: training {figures['status']}: {figures['reason']}", file=sys.stderr)
        return 1
    if figures["ratio"] < args.min_ratio:
        print(f"overfit: FAILED, hole L1 fell only {figures['ratio']:.1f}x (< {args.min_ratio}x)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
