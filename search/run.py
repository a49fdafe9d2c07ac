"""`python -m search.run --study NAME`: the search. Ray Tune runs trials, Optuna's TPE picks them, MLflow logs them.

Optuna storage and MLflow store default to SQLite under --results; --resume continues an interrupted search.
"""

from __future__ import annotations

import os

# Before Ray is imported or started (its workers inherit the environment): no token auth files, no usage
# stats, no progress tables (we print our own line per trial), frequent experiment snapshots for --resume.
# Ray starts workers at niceness 15: trials would starve beside any other busy process; they are the job here.
for _key, _value in {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AIR_NEW_OUTPUT": "0",
                     "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
                     "TUNE_GLOBAL_CHECKPOINT_S": "1", "RAY_DEDUP_LOGS": "0",
                     "RAY_worker_niceness": "0"}.items():
    os.environ.setdefault(_key, _value)

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import ray  # noqa: E402

from search import execute  # noqa: E402
from search.cli import fail, write_json  # noqa: E402
from search.run_setup import RunPlan, plan_run  # noqa: E402
from search.space import load_study  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m search.run", description=__doc__.split("\n")[0])
    p.add_argument("--study", required=True, help="a name in studies/ (e.g. unet_losses) or a path to a study file")
    p.add_argument("--data", default="", help="image folder (default: the embedded images, reduced budget)")
    p.add_argument("--results", default="results", help="folder for stores, checkpoints and logs (default ./results)")
    p.add_argument("--trials", type=int, default=0, help="number of trials (default: the study's budget)")
    p.add_argument("--max-concurrent", type=int, default=0, help="trials at once (default: what resources allow)")
    p.add_argument("--gpus-per-trial", type=float, default=-1, help="GPUs per trial, fractions allowed "
                   "(default: 1 where the cluster has GPUs, else 0)")
    p.add_argument("--cpus-per-trial", type=float, default=0, help="CPUs per trial (default: 1, or CPUs/GPUs)")
    p.add_argument("--time-budget", type=float, default=0,
                   help="end the search after SECONDS (running trials stop and count as pruned)")
    p.add_argument("--address", default="", help="join an existing Ray cluster (e.g. ray://head:10001 or auto)")
    p.add_argument("--storage", default="", help="Optuna RDB URL (default sqlite:///<results>/optuna.db)")
    p.add_argument("--tracking-uri", default="", help="MLflow URI (default sqlite:///<results>/mlflow.db)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted search in --results")
    p.add_argument("--no-asha", action="store_true", help="run every trial to the full budget")
    p.add_argument("--full-budget", action="store_true", help="use the study's full budget even without GPU/data")
    p.add_argument("--json", default="", metavar="PATH", help="also write the summary as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        study = load_study(args.study)
    except (ValueError, KeyError) as exc:
        return fail("search.run", exc)
    started = time.perf_counter()
    try:
        plan: RunPlan = plan_run(args, study)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        if ray.is_initialized():
            ray.shutdown()
        return fail("search.run", exc)
    try:
        summary = execute.run(plan, study)
    finally:
        ray.shutdown()
    summary["seconds"] = time.perf_counter() - started
    if args.json:
        write_json(args.json, summary)
    return 0 if summary.get("finished") else 130


if __name__ == "__main__":
    sys.exit(main())
