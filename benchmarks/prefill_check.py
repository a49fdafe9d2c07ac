"""Issue-4 check: plain U-Net vs push-pull pre-fill + residual U-Net at the same small budget, scored independently.

    python benchmarks/prefill_check.py --train DIR --unseen DIR [--out DIR] [--epochs 3] [--images 1000]
        [--sched constant|cosine|onecycle] [--warmup FRACTION]

Trains both models with the project's one loop (masked L1, hole x6 + valid, AdamW 3e-4, batch 8, 256x256, the
reference corruption; both get the same learning-rate schedule, constant by default), applies each with
`python -m search.inpaint` to images never used in training, then scores every output with code written here
(numpy + scikit-image, not search.metrics) beside OpenCV Telea / Navier-Stokes, biharmonic and the pre-fill alone on
the very same mask files. Besides the mean over images it prints the median of per-image differences, because one
flat image that the pre-fill fills exactly (PSNR at the 100 dB cap) can move a mean of 74 by a dB.
`--model-only plain|prefill` trains one model, so the two can run as parallel processes (each with `--threads`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from skimage.metrics import structural_similarity
from skimage.restoration import inpaint_biharmonic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.prefill import pyramid_fill  # noqa: E402
from search.config import Config  # noqa: E402
from search.train import save_checkpoint, train  # noqa: E402

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


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def hole_scores(out: np.ndarray, target: np.ndarray, hole: np.ndarray) -> tuple[float, float, float]:
    """Hole PSNR (all channels), hole SSIM (SSIM map averaged over hole pixels), hole L1, per image."""
    diff = (out - target)[hole]
    mse = float(np.mean(diff**2))
    psnr = 10 * np.log10(1.0 / max(mse, 1e-10))
    _, ssim_map = structural_similarity(target, out, channel_axis=2, data_range=1.0, full=True)
    return psnr, float(ssim_map[hole].mean()), float(np.abs(diff).mean())


def classical(image: np.ndarray, hole: np.ndarray) -> dict[str, np.ndarray]:
    u8 = (image * 255).round().astype(np.uint8)
    m8 = hole.astype(np.uint8) * 255
    masked = u8 * (~hole)[..., None]
    t = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    m = torch.from_numpy(hole)[None, None].float()
    pre = pyramid_fill(t * (1 - m), m)[0].permute(1, 2, 0).double().numpy()
    return {
        "telea": cv2.inpaint(masked, m8, 3, cv2.INPAINT_TELEA) / 255.0,
        "navier-stokes": cv2.inpaint(masked, m8, 3, cv2.INPAINT_NS) / 255.0,
        "biharmonic": inpaint_biharmonic(image * (~hole)[..., None], hole, channel_axis=-1),
        "pre-fill alone": pre,
    }


def score(args: argparse.Namespace) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """Mean hole scores per method, and every method's per-image hole PSNR (same image order for all)."""
    names = [p for p in sorted(args.out.glob("plain_out/*.png")) if not p.stem.endswith("_mask")]
    sources = {s.stem: s for s in args.unseen.iterdir()}
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for p in names:
        target = read(sources[p.stem])
        hole = np.asarray(Image.open(p.with_name(p.stem + "_mask.png")).convert("L")) >= 128
        outs = {m: read(args.out / f"{m}_out" / p.name) for m in MODELS}
        outs.update(classical(target, hole))
        for method, out in outs.items():
            out = np.where(hole[..., None], out, target)  # every method composited the same way
            rows.setdefault(method, []).append(hole_scores(out, target, hole))
    means = {m: dict(zip(("psnr_hole", "ssim_hole", "l1_hole"), np.mean(v, axis=0).tolist(), strict=True))
             | {"images": len(v)} for m, v in rows.items()}
    return means, {m: [r[0] for r in v] for m, v in rows.items()}


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Per-image hole-PSNR differences a - b: mean, median, share of images where a is better."""
    d = np.asarray(a) - np.asarray(b)
    return {"mean": float(d.mean()), "median": float(np.median(d)), "better": float((d > 0).mean())}


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
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in [args.model_only] if args.model_only else MODELS:
        t0 = time.time()
        ckpt = train_one(name, args)
        subprocess.run([sys.executable, "-m", "search.inpaint", "--model", str(ckpt), "--input", str(args.unseen),
                        "--output", str(args.out / f"{name}_out"), "--mask-seed", "7"], check=True, cwd=ROOT)
        print(f"[{name}] done in {(time.time() - t0) / 60:.1f} min", flush=True)
    if args.model_only:
        return 0
    results, per_image = score(args)
    pairs = {f"prefill - {m}": paired(per_image["prefill"], per_image[m]) for m in ("plain", "pre-fill alone")}
    results["paired_psnr_hole"] = pairs
    results["setting"] = {"sched": args.sched, "warmup": args.warmup, "epochs": args.epochs, "images": args.images}
    (args.out / "scores.json").write_text(json.dumps(results, indent=2))
    print(f"{'method':<16}{'hole PSNR':>10}{'hole SSIM':>10}{'hole L1':>9}   ({results['plain']['images']} unseen)")
    rows = {m: r for m, r in results.items() if m in per_image}
    for method, r in sorted(rows.items(), key=lambda kv: -kv[1]["psnr_hole"]):
        print(f"{method:<16}{r['psnr_hole']:>10.2f}{r['ssim_hole']:>10.3f}{r['l1_hole']:>9.4f}")
    print("per-image hole PSNR differences:")
    for pair, r in pairs.items():
        print(f"  {pair:<26} mean {r['mean']:+.2f} dB, median {r['median']:+.2f} dB, better on {r['better']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
