"""`python -m search.retrain_best --study NAME`: retrain the best full-budget trial of a search on more images.

The trial comes from the Optuna storage (the best COMPLETE trial, or `--trial N`); its exact configuration is
trained with the one training loop on `--images` training images (20k by default) at the study's full-budget image
size, checkpointed every epoch and resumed from that checkpoint when re-run. One MLflow run in the study's
experiment (tags: study, source trial) gets per-epoch metrics, the final model (logged and registered) and the
test-split evaluation beside the classical baselines. The model lands in `results/best/<study>/model.pt`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlflow.exceptions import MlflowException

from data.images import DEFAULT_IMAGES, DataError
from search.cli import at_least, fail, set_overrides, write_json
from search.core.checkpoint import load_checkpoint, save_checkpoint
from search.core.config import Config
from search.core.device import resolve_device
from search.core.evaluation import compare
from search.core.layout import Results
from search.core.progress import Progress
from search.core.train import Epoch, load_data, train
from search.tracking import registry
from search.tune import summary
from search.tune.best import pick_trial, retrain_config
from search.tune.storage import STORAGE_ERRORS
from search.tune.study import load_study

DEFAULT_TRAIN_IMAGES = 20_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m search.retrain_best", description=__doc__.split("\n")[0])
    p.add_argument("--study", required=True, help="the study searched with search.run (a name or a .py file)")
    p.add_argument("--data", default="", help="image folder or prepared cache (default: the embedded images)")
    p.add_argument("--images", type=at_least(1), default=DEFAULT_TRAIN_IMAGES,
                   help="training images (default 20000; all "
                   "available if fewer)")
    p.add_argument("--epochs", type=at_least(1), default=0, help="epochs (default: the study's full budget)")
    p.add_argument("--trial", type=at_least(0), default=-1, help="retrain this Optuna trial number instead of the best")
    p.add_argument("--image-size", type=at_least(16), default=0,
                   help="training size (default: the study's full budget)")
    p.add_argument("--results", default="results", help="the search's results folder (default ./results)")
    p.add_argument("--storage", default="", help="Optuna storage URL (default: the one the search used)")
    p.add_argument("--tracking-uri", default="", help="MLflow URI (default: the one the search used)")
    p.add_argument("--out", default="", help="output folder (default <results>/best/<study>)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--eval-images", type=at_least(1), default=200,
                   help="test images for the final evaluation (default 200)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--fresh", action="store_true", help="discard an existing checkpoint and start again")
    p.add_argument("--no-register", action="store_true", help="log the model to MLflow without registering it")
    p.add_argument("--json", default="", metavar="PATH", help="also write the summary as JSON")
    return p.parse_args(argv)


def resumable(path: Path, cfg: Config, fresh: bool) -> dict | None:
    """The checkpoint to continue from, if it belongs to this very configuration."""
    if fresh or not path.exists():
        return None
    ckpt = load_checkpoint(path, required=("model", "config", "epoch", "history"))
    differs = sorted(k for k, v in cfg.to_flat().items()
                     if k != "train.device" and ckpt["config"].get(k) != v)
    if differs:
        shown = ", ".join(f"{k}: {ckpt['config'].get(k)!r} -> {cfg.to_flat()[k]!r}" for k in differs[:4])
        raise ValueError(f"{path} is a retrain of another configuration ({shown}); pass --fresh to start again "
                         "or --out NEW_FOLDER to keep it")
    return ckpt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return retrain(args)
    except (DataError, ValueError, KeyError, FileNotFoundError, RuntimeError, MlflowException, *STORAGE_ERRORS) as exc:
        return fail("retrain_best", exc)


def retrain(args: argparse.Namespace) -> int:
    study = load_study(args.study)
    layout = Results.at(args.results)
    state = layout.read_state(study.name)
    if not (args.storage or state or (layout.root / "optuna.db").exists()):
        raise ValueError(f"no search in {layout.root}: run python -m search.run --study {study.name} first, or "
                         "give --results / --storage of that search")
    storage = args.storage or state.get("storage") or layout.optuna_url
    uri = args.tracking_uri or state.get("tracking_uri") or layout.mlflow_url
    if args.data and not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data} is not a folder")
    trial = pick_trial(storage, study, args.trial)
    cfg = retrain_config(study, trial, state.get("base"), args.data, args.images, args.epochs, args.image_size,
                         args.device)
    cfg = set_overrides(cfg, args.set).validate()
    out = Path(args.out) if args.out else layout.best(study.name)
    ckpt_path, model_path = out / "checkpoint.pt", out / "model.pt"
    resume = resumable(ckpt_path, cfg, args.fresh)
    value = f"{trial['value']:.4f}" if trial.get("value") is not None else "no value"
    print(f"retrain_best: trial {trial['number']} of study {study.name} ({study.objective} {value}): "
          + ", ".join(f"{k}={summary.short(v)}" for k, v in sorted(trial["params"].items())))
    if trial.get("checkpoint"):
        print(f"retrain_best: the search's own final weights of this trial: {trial['checkpoint']}")

    done = resume is not None and resume["epoch"] >= cfg.train.epochs and model_path.exists()
    if done and registry.is_finished(uri, resume.get("mlflow_run_id", "")):
        print(f"retrain_best: already done: {model_path} (MLflow run {resume['mlflow_run_id']}); pass --fresh to "
              "train again")
        return 0
    device = resolve_device(cfg.train.device)
    data = load_data(cfg, Progress("decoding"))
    have = len(data["train"])
    if have < args.images:
        print(f"retrain_best: {args.images} training images asked for, {have} available: training on all {have}")
    print(f"retrain_best: {cfg.train.epochs} epochs on {have} images at {cfg.data.image_size}x{cfg.data.image_size} "
          f"on {device}; checkpoint every epoch in {ckpt_path}", flush=True)
    if resume is not None:
        print(f"retrain_best: resuming after epoch {resume['epoch']} from {ckpt_path}")
    run_id = registry.open_run(uri, study.name, trial["number"], cfg, resume.get("mlflow_run_id") if resume else None)
    if resume is not None:
        registry.backfill(uri, run_id, resume["history"])

    def report(metrics: dict[str, float], epoch: Epoch) -> None:
        ckpt = epoch()
        ckpt["mlflow_run_id"] = run_id
        save_checkpoint(ckpt, ckpt_path)
        registry.log_epoch(uri, run_id, metrics)
        shown = f", {study.objective} {metrics[study.objective]:.3f}" if study.objective in metrics else ""
        print(f"retrain_best: epoch {metrics['epoch']:.0f}/{cfg.train.epochs}: loss {metrics['train/loss']:.4f}"
              f"{shown} ({metrics['train/images_per_s']:.1f} img/s)", flush=True)

    try:
        result = train(cfg, report, data=data, resume=resume, progress=Progress("retrain_best: steps", every=30.0))
        if result.status != "completed":
            raise RuntimeError(f"training {result.status}: {result.reason}")
        save_checkpoint({"model": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
                         "config": cfg.to_flat(), "history": result.history, "study": study.name,
                         "source_trial": trial["number"]}, model_path)
        print(f"retrain_best: model written to {model_path}")
        root = Path(cfg.data.root) if cfg.data.root else DEFAULT_IMAGES
        comparison = compare(result.model, cfg, root, args.eval_images, device, out / "eval")
        registry.finish_run(uri, run_id, result.model, comparison, model_path, register=not args.no_register)
    except KeyboardInterrupt:
        registry.close_run(uri, run_id, "KILLED")
        print(f"\nretrain_best: interrupted; the last finished epoch is in {ckpt_path}: run the same command again "
              "to continue", file=sys.stderr)
        return 130
    except BaseException:
        registry.close_run(uri, run_id, "FAILED")  # never left RUNNING; the checkpoint stays for a re-run
        raise
    best = max((m for m in comparison["results"] if m not in ("model", "mean fill")),
               key=lambda m: comparison["results"][m]["psnr_hole"])
    ours, theirs = comparison["results"]["model"], comparison["results"][best]
    print(f"retrain_best: done: {model_path}; test hole PSNR {ours['psnr_hole']:.2f} dB / SSIM "
          f"{ours['ssim_hole']:.3f} against {best} {theirs['psnr_hole']:.2f} dB / {theirs['ssim_hole']:.3f}")
    final = {"study": study.name, "source_trial": trial["number"], "model": str(model_path), "mlflow_run_id": run_id,
             "tracking_uri": uri, "train_images": have, "history": result.history, **comparison}
    if args.json:
        write_json(args.json, final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
