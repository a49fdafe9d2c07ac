"""`python -m search.evaluate --model CKPT [--data DIR]`: a model beside classical baselines on the test split.

Every method is scored by the same metric code on the held-out test images with fixed, seeded holes: hole PSNR /
SSIM / L1 and whole-image PSNR, per-image means. Prints a table, writes a comparison image, logs to MLflow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from data.corrupt import apply_mask, composite
from data.images import DEFAULT_IMAGES, TEST_MASK_SEED, DataError, fixed_masks, load_splits
from search.baselines import BASELINES
from search.cli import Progress, fail, write_json
from search.config import Config
from search.tracking import now_ms, sample_grid
from search.train import corruption_of, load_model, resolve_device, score


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m search.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a checkpoint (.pt) written by this project")
    p.add_argument("--data", default="", help="image folder (default: the embedded images); its test split is used")
    p.add_argument("--images", type=int, default=200, help="at most this many test images (default 200)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="results/eval", help="folder for the comparison image and table")
    p.add_argument("--tracking-uri", default="", help="MLflow URI (default sqlite:///<out>/../mlflow.db)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--json", default="", metavar="PATH", help="also write the table as JSON")
    return p.parse_args(argv)


def table(results: dict[str, dict[str, float]]) -> str:
    lines = [f"{'method':<24} {'hole PSNR':>10} {'hole SSIM':>10} {'hole L1':>9} {'whole PSNR':>11}"]
    for name, m in results.items():
        lines.append(f"{name:<24} {m['psnr_hole']:>10.2f} {m['ssim_hole']:>10.3f} {m['l1_hole']:>9.4f} "
                     f"{m['psnr']:>11.2f}")
    return "\n".join(lines)


def compare(model: torch.nn.Module, cfg: Config, root: Path, images: int, device: torch.device, out: Path) -> dict:
    """Score `model` and every baseline on the test split of `root`; print and save the table and comparison."""
    sets, report = load_splits(root, cfg.data.image_size, cfg.data.val_fraction, cfg.data.test_fraction,
                               {"train": 0, "val": 0, "test": images}, cfg.data.workers, Progress("decoding"))
    test = sets["test"]
    if len(test) == 0:
        raise DataError(f"the test split of {root} is empty (test fraction {cfg.data.test_fraction}); add images")
    masks = fixed_masks(corruption_of(cfg), TEST_MASK_SEED, len(test), test.size)
    model.eval()
    methods = {"model": lambda image, mask: model(apply_mask(image, mask)), **BASELINES}
    results = {name: score(fn, test, masks, device) for name, fn in methods.items()}
    out.mkdir(parents=True, exist_ok=True)
    text = table(results)
    (out / "table.txt").write_text(text + "\n")
    # Comparison: masked input | Telea | model | target, for a few fixed test images.
    image = test.batch(list(range(min(4, len(test)))), device)
    mask = masks[: len(image)].to(device)
    with torch.no_grad():
        telea = composite(BASELINES["OpenCV Telea"](image, mask), image, mask)
        pred = composite(model(apply_mask(image, mask)).float(), image, mask)
    grid = sample_grid(torch.cat([image * (1 - mask), telea], dim=3), pred, image)
    grid.save(out / "comparison.png")
    print(f"evaluate: {len(test)} test images of {root} at {test.size}x{test.size}, {cfg.data.n_holes} holes of "
          f"{cfg.data.hole_size}px (seed {TEST_MASK_SEED}); {len(report.skipped)} unreadable skipped")
    print(text)
    print(f"evaluate: comparison image (masked | Telea | model | target) in {out / 'comparison.png'}")
    return {"data": str(root), "images": len(test), "results": results, "comparison": str(out / "comparison.png"),
            "table": str(out / "table.txt")}


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    model, cfg = load_model(Path(args.model), device)
    root = Path(args.data) if args.data else DEFAULT_IMAGES
    return {"model": str(args.model), **compare(model, cfg, root, args.images, device, Path(args.out))}


def metrics_of(summary: dict) -> dict[str, float]:
    """Flat MLflow metric names, e.g. test/opencv_telea/psnr_hole."""
    flat = {}
    for method, metrics in summary["results"].items():
        slug = method.lower().replace(" ", "_").replace("-", "_")
        flat.update({f"test/{slug}/{k}": v for k, v in metrics.items()})
    return flat


def log_mlflow(summary: dict, args: argparse.Namespace) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = args.tracking_uri or f"sqlite:///{(Path(args.out).resolve().parent / 'mlflow.db')}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("evaluate")
    exp_id = exp.experiment_id if exp else client.create_experiment("evaluate")
    run = client.create_run(exp_id, run_name=f"evaluate {Path(args.model).name}",
                            tags={"model": summary["model"], "data": summary["data"]})
    client.log_batch(run.info.run_id, metrics=[Metric(k, v, now_ms(), 0) for k, v in metrics_of(summary).items()])
    client.log_artifact(run.info.run_id, summary["comparison"])
    client.log_artifact(run.info.run_id, summary["table"])
    client.set_terminated(run.info.run_id, "FINISHED")
    print(f"evaluate: logged to MLflow ({uri}), experiment 'evaluate'")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
    except (DataError, ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        return fail("evaluate", exc)
    if not args.no_mlflow:
        log_mlflow(summary, args)
    if args.json:
        write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
