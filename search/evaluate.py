"""`python -m search.evaluate --model CKPT [--data DIR]`: a model beside classical baselines on the test split.

Every method is scored by the same metric code on the held-out test images with fixed, seeded holes: hole PSNR /
SSIM / L1 and whole-image PSNR, per-image means. Prints a table, writes a comparison image, logs to MLflow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlflow.exceptions import MlflowException

from data.images import DEFAULT_IMAGES, DataError
from search.cli import at_least, fail, write_json
from search.core.checkpoint import load_model
from search.core.device import resolve_device
from search.core.evaluation import compare
from search.core.layout import Results
from search.tracking.evaluation import log_evaluation


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m search.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a checkpoint (.pt) written by this project, "
                   "or a search trial's checkpoint folder or URI (as the search summary prints it)")
    p.add_argument("--data", default="", help="image folder (default: the embedded images); its test split is used")
    p.add_argument("--images", type=at_least(1), default=200, help="at most this many test images (default 200)")
    p.add_argument("--device", default="auto")
    p.add_argument("--results", default="results", help="results folder for the defaults below (default ./results)")
    p.add_argument("--out", default="", help="folder for the comparison image and table (default <results>/eval)")
    p.add_argument("--tracking-uri", default="", help="MLflow URI (default sqlite:///<results>/mlflow.db)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--json", default="", metavar="PATH", help="also write the table as JSON")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    model, cfg = load_model(args.model, device)
    root = Path(args.data) if args.data else DEFAULT_IMAGES
    out = Path(args.out) if args.out else Results.at(args.results).eval_dir
    return {"model": str(args.model), **compare(model, cfg, root, args.images, device, out)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
        if not args.no_mlflow:
            uri = args.tracking_uri or Results.at(args.results).mlflow_url
            log_evaluation(uri, summary)
            print(f"evaluate: logged to MLflow ({uri}), experiment 'evaluate'")
    except (DataError, ValueError, KeyError, FileNotFoundError, RuntimeError, MlflowException) as exc:
        return fail("evaluate", exc)
    if args.json:
        write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
