"""`python -m search.lr_find`: learning-rate range test (Smith 2017) on a small training set.

The rate rises exponentially every step while the training loss is recorded; the suggestion is a tenth of the
rate at the smoothed loss minimum. Runs the one training loop with the `range` schedule; saves a PNG plot.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from data.corrupt import scaled_hole  # noqa: E402
from data.images import DEFAULT_IMAGES, DataError, load_splits  # noqa: E402
from search.cli import add_common, at_least, fail, sanity_size, set_overrides, write_json  # noqa: E402
from search.core.config import Config  # noqa: E402
from search.core.lr_range import smooth, steepest, suggest  # noqa: E402
from search.core.progress import Progress  # noqa: E402
from search.core.train import train  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m search.lr_find", description=__doc__.split("\n")[0])
    add_common(p)
    p.add_argument("--size", type=at_least(16), default=None,
                   help="image size; holes scale with it, 32 px at 256 (default: 256 on a GPU, 96 on a CPU)")
    p.add_argument("--images", type=at_least(1), default=64, help="training images (default 64)")
    p.add_argument("--steps", type=at_least(2), default=60, help="steps of the sweep (default 60)")
    p.add_argument("--min-lr", type=at_least(0, float, above=True), default=1e-6)
    p.add_argument("--max-lr", type=at_least(0, float, above=True), default=1e-1)
    p.add_argument("--plot", default="results/lr_find.png", help="where to save the plot (PNG)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    if not 0 < args.min_lr < args.max_lr:
        raise ValueError(f"need 0 < --min-lr < --max-lr, got {args.min_lr} and {args.max_lr}")
    cfg = Config()
    cfg.data.image_size = sanity_size(args.size, args.device)
    cfg.data.hole_size = scaled_hole(cfg.data.image_size)
    cfg.train.device = args.device
    cfg.optim.lr = args.max_lr
    cfg.sched.kind = "range"
    cfg.sched.min_lr_ratio = args.min_lr / args.max_lr
    cfg.train.steps_per_epoch = 1  # one "epoch" per step, so report() sees every step's loss and rate
    cfg.train.epochs = args.steps
    cfg.train.eval_every = 0
    set_overrides(cfg, args.set)
    root = Path(args.data) if args.data else DEFAULT_IMAGES
    sets, report = load_splits(root, cfg.data.image_size, 0.0, 0.0, {"train": args.images}, cfg.data.workers,
                                  Progress("decoding images"))
    if len(sets["train"]) < cfg.train.batch_size:
        raise DataError(f"need at least {cfg.train.batch_size} readable images under {root}")
    print(f"lr_find: {len(sets['train'])} images from {root} ({len(report.skipped)} unreadable skipped), "
          f"at {cfg.data.image_size}x{cfg.data.image_size}, {args.steps} steps from {args.min_lr:g} to {args.max_lr:g}")
    lrs: list[float] = []
    losses: list[float] = []

    def on_step(m: dict, _ckpt) -> bool:
        # The rate used by this step is the one before the scheduler advanced.
        lrs.append(args.min_lr * (args.max_lr / args.min_lr) ** ((m["step"] - 1) / max(args.steps - 1, 1)))
        losses.append(m["train/loss"])
        if int(m["step"]) % 10 == 0:
            print(f"  step {int(m['step']):>4}  lr {lrs[-1]:.2e}  loss {losses[-1]:.4f}", flush=True)
        s = smooth(losses)
        return len(s) > 5 and s[-1] > 4 * min(s)  # stop once the loss has clearly blown up

    result = train(cfg, on_step, data={"train": sets["train"]})
    if len(losses) < 5:
        raise RuntimeError(f"the sweep ended after {len(losses)} steps ({result.reason}); lower --max-lr")
    lr, steep = suggest(lrs, losses), steepest(lrs, losses)
    plot = Path(args.plot)
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses, alpha=0.3, label="loss")
    ax.plot(lrs, smooth(losses), label="smoothed")
    ax.axvline(lr, color="red", linestyle="--", label=f"suggested {lr:.1e} (min / 10)")
    ax.axvline(steep, color="grey", linestyle=":", label=f"steepest descent {steep:.1e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="LR range test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot, dpi=100)
    plt.close(fig)
    print(f"lr_find: suggested learning rate {lr:.2e} (a tenth of the loss minimum; steepest descent at "
          f"{steep:.2e}; plot: {plot})")
    return {"suggested_lr": lr, "steepest_lr": steep, "lrs": lrs, "losses": losses, "plot": str(plot),
            "status": result.status, "config": cfg.to_flat()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        figures = run(args)
    except (DataError, ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        return fail("lr_find", exc)
    if args.json:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
