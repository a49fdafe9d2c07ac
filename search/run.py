"""`python -m search.run --study NAME`: the search. Ray Tune runs trials, Optuna's TPE picks them, MLflow logs them.

Optuna storage and MLflow store default to SQLite under --results; --resume continues an interrupted search.
Exit status: 0 when at least one trial ran the full budget, 1 when none did (the failure reasons are printed,
grouped), 2 for an error before the search started, 130 when interrupted (continue with --resume).
"""

from __future__ import annotations

import argparse
import sys
import time

from mlflow.exceptions import MlflowException

from search.cli import at_least, fail, write_json
from search.core.layout import StoreError
from search.tune import execute
from search.tune.plan import RunOptions, plan_run, stop_ray
from search.tune.storage import STORAGE_ERRORS
from search.tune.study import load_study


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m search.run", description=__doc__.split("\n")[0])
    p.add_argument("--study", required=True, help="a name in studies/ (e.g. unet_losses) or a path to a study file")
    p.add_argument("--data", default="", help="image folder (default: the embedded images, reduced budget)")
    p.add_argument("--results", default="results", help="folder for stores, checkpoints and logs (default ./results)")
    p.add_argument("--trials", type=at_least(1), default=None, help="number of trials (default: the study's budget)")
    p.add_argument("--max-concurrent", type=at_least(1), default=None,
                   help="trials at once (default: what resources allow)")
    p.add_argument("--gpus-per-trial", type=at_least(0, float), default=None, help="GPUs per trial, fractions "
                   "allowed (default: 1 where the cluster has GPUs, else 0)")
    p.add_argument("--cpus-per-trial", type=at_least(0, float, above=True), default=None,
                   help="CPUs per trial (default: 1, or CPUs/GPUs)")
    p.add_argument("--time-budget", type=at_least(0, float, above=True), default=None, metavar="SECONDS",
                   help="end the search after SECONDS (running trials stop and count as pruned)")
    p.add_argument("--address", default="", help="join an existing Ray cluster (e.g. ray://head:10001 or auto)")
    p.add_argument("--storage", default="", help="Optuna RDB URL (default sqlite:///<results>/optuna.db)")
    p.add_argument("--tracking-uri", default="", help="MLflow URI (default sqlite:///<results>/mlflow.db; on a "
                   "cluster of several nodes an http:// tracking server)")
    p.add_argument("--storage-path", default="", help="where trial checkpoints and Tune's state go (default "
                   "<results>/ray; on a cluster a folder every node mounts, or s3://bucket/prefix)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted search in --results")
    p.add_argument("--no-asha", action="store_true", help="run every trial to the full budget")
    p.add_argument("--full-budget", action="store_true", help="use the study's full budget even without GPU/data")
    p.add_argument("--train-on-cpu", action="store_true", help="trials hold their GPUs but train on the CPU: for "
                   "testing GPU scheduling on a cluster declared with logical GPUs (ray start --num-gpus N)")
    p.add_argument("--json", default="", metavar="PATH", help="also write the summary as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = RunOptions(**{k: v for k, v in vars(args).items() if k != "json"})
    started = time.perf_counter()
    try:
        try:
            study = load_study(args.study)
            plan = plan_run(options, study)
        except (ValueError, KeyError, FileNotFoundError, RuntimeError, MlflowException, *STORAGE_ERRORS) as exc:
            return fail("search.run", exc)
        try:
            summary = execute.run(plan, study)
        except (StoreError, MlflowException, *STORAGE_ERRORS) as exc:
            return fail("search.run", f"a store failed during the search: {exc}; once it works again, continue "
                        f"with python -m search.run --study {args.study} --results {plan.results} --resume")
    finally:
        stop_ray()
    summary["seconds"] = time.perf_counter() - started
    if args.json:
        write_json(args.json, summary)
    if not summary.get("finished"):
        return 130
    if not summary["counts"].get("COMPLETE"):
        print("search.run: no trial ran the full budget, so there is no result to retrain (reasons above)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
