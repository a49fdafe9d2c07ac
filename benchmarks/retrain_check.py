"""Issue-5 check: retrain a search's best setting on a real image folder, apply it to unseen images, score it
independently against the classical methods.

    python benchmarks/retrain_check.py --train DIR --unseen DIR [--study unet_losses] [--results results]
        [--images 1000] [--epochs 3] [--out results/retrain_check] [--device auto]

Needs a finished search in --results (the README's first quick-start command makes one). Runs
`python -m search.retrain_best --study S --data TRAIN --images N --epochs E` (resumable: re-run this script after an
interruption), then `python -m search.inpaint --mask-seed 7` on UNSEEN, then scores the model with
`benchmarks/scoring.py` (numpy + scikit-image + OpenCV, none of search.core.metrics) beside OpenCV Telea /
Navier-Stokes, biharmonic and the pre-fill alone, on the same masks. Prints where the model beats the best
classical method on hole PSNR and hole SSIM, and where it does not; writes scores.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import scoring  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=Path, required=True, help="real image folder (or prepared cache) to retrain on")
    p.add_argument("--unseen", type=Path, required=True, help="images the project has never seen")
    p.add_argument("--study", default="unet_losses")
    p.add_argument("--results", type=Path, default=Path("results"), help="the search's results folder")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("results/retrain_check"))
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = args.out / "model"
    subprocess.run([sys.executable, "-m", "search.retrain_best", "--study", args.study, "--data", str(args.train),
                    "--images", str(args.images), "--epochs", str(args.epochs), "--results", str(args.results),
                    "--out", str(model_dir), "--device", args.device, "--json", str(args.out / "retrain.json")],
                   check=True, cwd=ROOT)
    outputs = args.out / "model_out"
    subprocess.run([sys.executable, "-m", "search.inpaint", "--model", str(model_dir / "model.pt"), "--input",
                    str(args.unseen), "--output", str(outputs), "--mask-seed", "7", "--device", args.device],
                   check=True, cwd=ROOT)
    means, per_image = scoring.score({"model": outputs}, args.unseen)
    best = {k: max(("telea", "navier-stokes"), key=lambda m: means[m][k]) for k in ("psnr_hole", "ssim_hole")}
    pairs = {f"model - {m}": scoring.paired(per_image["model"], per_image[m]) for m in scoring.CLASSICAL}
    (args.out / "scores.json").write_text(json.dumps({**means, "paired_psnr_hole": pairs}, indent=2))
    scoring.print_table(means, pairs)
    for k, label in (("psnr_hole", "hole PSNR"), ("ssim_hole", "hole SSIM")):
        m, ours, theirs = best[k], means["model"][k], means[best[k]][k]
        verdict = "beats" if ours > theirs else "does NOT beat"
        print(f"{label}: the model ({ours:.3f}) {verdict} the best OpenCV method, {m} ({theirs:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
