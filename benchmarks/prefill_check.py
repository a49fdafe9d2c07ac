"""Issue-4 check: plain U-Net vs push-pull pre-fill + residual U-Net at the same small budget, scored independently.

    python benchmarks/prefill_check.py --train DIR --unseen DIR [--out DIR] [--epochs 3] [--images 1000]
        [--sched constant|cosine|onecycle] [--warmup FRACTION]

Trains both models with the project's one loop (masked L1, hole x6 + valid, AdamW 3e-4, batch 8, 256x256, the
reference corruption; both get the same learning-rate schedule, constant by default), applies each with
`python -m search.inpaint` to images never used in training, then scores every output independently
(`benchmarks/scoring.py`) beside OpenCV Telea / Navier-Stokes, biharmonic and the pre-fill alone on the same masks.
`--model-only plain|prefill` trains one model, so the two can run as parallel processes (each with `--threads`);
`--score-only` scores the outputs already there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.core.checkpoint import save_checkpoint  # noqa: E402
from search.core.config import Config  # noqa: E402
from search.core.train import train  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
import scoring  # noqa: E402

MODELS = {
    "plain": {"model.prefill": "none", "model.residual": False},
    "prefill": {"model.prefill": "pyramid", "model.residual": True},
}


def config(name: str, args: argparse.Namespace) -> Config:
    flat = {
        "model.depth": 4, "model.width": 32, **MODELS[name],
        "loss.w_hole": 6.0, "loss.w_valid": 1.0, "loss.w_perceptual": 0.0, "loss.w_tv": 0.0, "loss.w_style": 0.0,
        "optim.lr": 3e-4, "sched.kind": args.sched, "sched.warmup_fraction": args.warmup,
        "train.batch_size": 8, "train.epochs": args.epochs,
        "data.root": str(args.train), "data.image_size": 256, "data.train_images": args.images,
        "data.val_fraction": 0.05, "data.test_fraction": 0.0, "data.val_images": 48, "data.workers": 2,
    }
    return Config.from_flat(flat)


def train_one(name: str, args: argparse.Namespace) -> Path:
    path = args.out / f"{name}.pt"
    if path.exists():
        return path
    cfg = config(name, args)

    def report(metrics: dict, epoch) -> None:
        print(f"[{name}] epoch {metrics['epoch']:.0f}: loss {metrics['train/loss']:.4f} "
              f"val hole PSNR {metrics.get('val/psnr_hole', float('nan')):.2f} dB "
              f"{metrics['train/images_per_s']:.2f} img/s", flush=True)
        save_checkpoint(epoch(), args.out / f"{name}.partial.pt")

    result = train(cfg, report)
    if result.status != "completed":
        raise SystemExit(f"{name}: {result.status}: {result.reason}")
    save_checkpoint({"model": result.model.state_dict(), "config": cfg.to_flat(), "history": result.history}, path)
    print(f"[{name}] trained in {result.seconds / 60:.1f} min", flush=True)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--unseen", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("results/prefill_check"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--sched", choices=["constant", "cosine", "onecycle"], default="constant",
                   help="learning-rate schedule of both models (peak 3e-4)")
    p.add_argument("--warmup", type=float, default=0.0, help="linear warm-up, as a fraction of all steps")
    p.add_argument("--model-only", choices=sorted(MODELS), default="")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--score-only", action="store_true", help="score the outputs already in --out")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in [] if args.score_only else [args.model_only] if args.model_only else MODELS:
        t0 = time.time()
        ckpt = train_one(name, args)
        subprocess.run([sys.executable, "-m", "search.inpaint", "--model", str(ckpt), "--input", str(args.unseen),
                        "--output", str(args.out / f"{name}_out"), "--mask-seed", "7"], check=True, cwd=ROOT)
        print(f"[{name}] done in {(time.time() - t0) / 60:.1f} min", flush=True)
    if args.model_only:
        return 0
    results, per_image = scoring.score({m: args.out / f"{m}_out" for m in MODELS}, args.unseen)
    pairs = {f"prefill - {m}": scoring.paired(per_image["prefill"], per_image[m]) for m in ("plain", "pre-fill alone")}
    results["paired_psnr_hole"] = pairs
    results["setting"] = {"sched": args.sched, "warmup": args.warmup, "epochs": args.epochs, "images": args.images}
    (args.out / "scores.json").write_text(json.dumps(results, indent=2))
    scoring.print_table({m: r for m, r in results.items() if m in per_image}, pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
