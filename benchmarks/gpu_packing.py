"""Trials packed on one GPU: the same search run with 1, 2 and 4 trials per GPU (--gpus-per-trial 1, 0.5, 0.25),
images/s per trial and in total, against one trial alone.

    python benchmarks/gpu_packing.py [--data DIR] [--image-size 256] [--epochs 3] [--steps 100] [--json OUT]

Each setting is a real `search.run` (Ray Tune + Optuna + MLflow) of a fixed architecture (only the learning rate
varies, so every trial costs the same) with as many trials as fit at once, no early stopping. The figures are the
trials' own `train/images_per_s` (the training loop's count of images through forward and backward per second), read
from each search's MLflow store: the median over epochs after the first (CUDA warm-up), then over trials; "total" is
the sum over the trials that ran at the same time (the script checks that they did).

Without a GPU, the same script checks itself on logical GPUs: start `ray start --head --num-gpus 1` and pass
`--address 127.0.0.1:PORT --train-on-cpu` (figures then mean nothing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

STUDY = '''
"""GPU packing benchmark: one fixed U-Net, only the learning rate varies."""
from search.tune.study import Budget, Study

def space(trial):
    trial.suggest_float("optim.lr", 3e-4, 1e-3, log=True)

STUDY = Study(
    name="packing", description="", space=space, asha=None,
    fixed={{"model.depth": {depth}, "model.width": {width}, "train.batch_size": {batch}}},
    budget=Budget(trials=1, epochs={epochs}, train_images={images}, val_images=16, image_size={size},
                  steps_per_epoch={steps}, val_fraction=0.05, test_fraction=0.05),
)
'''


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="", help="image folder (default: the embedded images)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--images", type=int, default=1000, help="training images (default 1000)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=100, help="steps per epoch (default 100)")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--packed", default="1,2,4", help="trials per GPU to compare (default 1,2,4)")
    p.add_argument("--address", default="", help="a Ray cluster to use (default: a local one on this machine)")
    p.add_argument("--train-on-cpu", action="store_true", help="dry run on logical GPUs (see above)")
    p.add_argument("--json", default="", help="also write the figures as JSON")
    return p.parse_args()


def measure(args: argparse.Namespace, study: Path, per_gpu: int, root: Path) -> dict:
    """One search with `per_gpu` trials on one GPU; per-trial images/s and whether they overlapped."""
    import optuna
    from mlflow.tracking import MlflowClient

    results = root / f"packed_{per_gpu}"
    cmd = [sys.executable, "-m", "search.run", "--study", str(study), "--results", str(results), "--trials",
           str(per_gpu), "--max-concurrent", str(per_gpu), "--gpus-per-trial", f"{1 / per_gpu:g}", "--no-asha",
           "--full-budget"]
    cmd += ["--data", args.data] if args.data else []
    cmd += ["--address", args.address] if args.address else []
    cmd += ["--train-on-cpu"] if args.train_on_cpu else []
    print(f"gpu_packing: {per_gpu} trial(s) per GPU: {' '.join(cmd)}", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"gpu_packing: the search failed ({done.returncode}):\n{done.stdout[-3000:]}"
                         f"\n{done.stderr[-3000:]}")
    trials = optuna.load_study(study_name="packing", storage=f"sqlite:///{results / 'optuna.db'}").get_trials()
    together = max(t.datetime_start for t in trials) < min(t.datetime_complete for t in trials)
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    exp = client.get_experiment_by_name("packing")
    rates = []
    for run in client.search_runs([exp.experiment_id]):
        if "mlflow.parentRunId" not in run.data.tags:
            continue  # the search's parent run
        history = sorted(client.get_metric_history(run.info.run_id, "train/images_per_s"), key=lambda m: m.step)
        steady = [m.value for m in history[1:]] or [m.value for m in history]
        rates.append(statistics.median(steady))
    return {"trials_per_gpu": per_gpu, "trials": len(rates), "ran_together": together,
            "per_trial_images_per_s": statistics.median(rates), "total_images_per_s": sum(rates),
            "each": rates, "gpu_ids": [t.user_attrs.get("gpu_ids", "") for t in trials]}


def main() -> int:
    args = parse_args()
    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device (dry run)"
    except ImportError:
        device = "unknown"
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-packing-") as tmp:
        study = Path(tmp) / "packing.py"
        study.write_text(STUDY.format(depth=args.depth, width=args.width, batch=args.batch, epochs=args.epochs,
                                      images=args.images, size=args.image_size, steps=args.steps))
        for per_gpu in (int(x) for x in args.packed.split(",")):
            rows.append(measure(args, study, per_gpu, Path(tmp)))
    alone = rows[0]["total_images_per_s"]
    print(f"\ngpu_packing on {device}: U-Net depth {args.depth} width {args.width}, batch {args.batch}, "
          f"{args.image_size}x{args.image_size}, {args.epochs} epochs x {args.steps} steps")
    print(f"{'trials/GPU':>10}  {'per trial img/s':>15}  {'total img/s':>11}  {'total vs 1':>10}  together  GPU ids")
    for r in rows:
        print(f"{r['trials_per_gpu']:>10}  {r['per_trial_images_per_s']:>15.1f}  {r['total_images_per_s']:>11.1f}  "
              f"{r['total_images_per_s'] / alone:>9.2f}x  {'yes' if r['ran_together'] else 'NO':>8}  "
              f"{','.join(r['gpu_ids'])}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
