"""Planning a search run: absolute paths, Ray start-up, resources per trial, budget (full or reduced), resume state.

Every path is made absolute here in the driver: a trial's working directory is a throwaway folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray

from search import tracking
from search.space import Budget, Study
from search.tracking import Tracking


@dataclass
class RunPlan:
    study: str
    study_arg: str  # as the user gave it (a name or a file), for the --resume hint
    results: Path
    storage: str
    tracking_uri: str
    ray_dir: Path
    checkpoint_dir: Path
    state_file: Path
    budget: Budget
    budget_note: str
    base: dict[str, Any]
    resources: dict[str, float]
    max_concurrent: int
    resume: bool
    asha: bool
    time_budget: float
    tracking: Tracking | None = None


def _sqlite(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def _start_ray(address: str) -> None:
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            # A private cluster: a bare ray.init() would join whatever cluster /tmp/ray last recorded.
            ray.init(address="local", include_dashboard=False, **quiet)
    except Exception as exc:  # Ray raises bare Exception / ConnectionError on start-up failures
        if ray.is_initialized():
            ray.shutdown()
        where = f"connect to the Ray cluster at {address}" if address else "start a local Ray cluster"
        hint = ("check the address and that the cluster runs (`ray status` on its head node)" if address else
                "its processes did not come up in time, usually because the machine is overloaded or its temp "
                "folder is full: free some CPU or disk and run the same command again (nothing was started)")
        raise RuntimeError(f"could not {where}: {exc}; {hint}") from exc
    # Our own line per trial and the final table replace Tune's logs; tracebacks stay in the trials' error files.
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _choose_budget(study: Study, has_data: bool, gpus: float, args: argparse.Namespace) -> tuple[Budget, str]:
    full = study.budget
    reasons = [r for r, missing in (("no GPU", gpus <= 0), ("no --data", not has_data)) if missing]
    if not reasons or study.reduced is None or args.full_budget:
        return full, f"full budget: {full.trials} trials x {full.epochs} epochs"
    r = study.reduced
    note = (f"reduced budget ({', '.join(reasons)}): {r.trials} trials x up to {r.epochs} epochs on "
            f"{r.train_images or 'all'} training images at {r.image_size}x{r.image_size}; the study's full budget is "
            f"{full.trials} trials x {full.epochs} epochs on {full.train_images or 'all'} images at "
            f"{full.image_size}x{full.image_size} (give --data and a GPU, or --full-budget)")
    return r, note


def plan_run(args: argparse.Namespace, study: Study) -> RunPlan:
    results = Path(args.results).resolve()
    state_file = results / "runs" / f"{study.name}.json"
    ray_dir = results / "ray"
    exists = state_file.exists() or (ray_dir / study.name).exists()
    if exists and not args.resume:
        raise ValueError(
            f"{results} already holds a search of study {study.name!r} (see {state_file}); pass --resume to "
            "continue it, or --results NEW_FOLDER to start a new one")
    if args.resume and not exists:
        raise ValueError(f"nothing to resume: no search of study {study.name!r} in {results}")
    data = Path(args.data).resolve() if args.data else None
    if data is not None and not data.is_dir():
        raise FileNotFoundError(f"--data {data} is not a folder")
    results.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = json.loads(state_file.read_text()) if args.resume else {}

    _start_ray(args.address)
    cluster = ray.cluster_resources()
    cpus, gpus = float(cluster.get("CPU", 1)), float(cluster.get("GPU", 0))
    gpt = args.gpus_per_trial if args.gpus_per_trial >= 0 else (1.0 if gpus > 0 else 0.0)
    if gpt > 0 and gpus <= 0:
        raise RuntimeError(f"--gpus-per-trial {gpt} asked for, but the Ray cluster has no GPU: trials would wait "
                           "forever; use --gpus-per-trial 0")
    if gpt > gpus:
        raise RuntimeError(f"--gpus-per-trial {gpt} is more than the cluster's {gpus:g} GPUs")
    cpt = args.cpus_per_trial or (max(1.0, math.floor(cpus / max(1, math.floor(gpus / gpt)))) if gpt > 0 else 1.0)
    if cpt > cpus:
        raise RuntimeError(f"--cpus-per-trial {cpt:g} is more than the cluster's {cpus:g} CPUs")
    if args.resume:
        budget, note = Budget(**state["budget"]), state["budget_note"] + " (resumed)"
    else:
        budget, note = _choose_budget(study, data is not None, gpus, args)
        if args.trials:
            budget = Budget(**{**budget.__dict__, "trials": args.trials})
    fit = math.floor(gpus / gpt) if gpt > 0 else math.floor(cpus / cpt)
    concurrent = args.max_concurrent or budget.max_concurrent or fit
    concurrent = max(1, min(concurrent, fit, budget.trials))

    base = {**study.fixed, **budget.flat(), "data.root": str(data) if data else "",
            "train.device": "cuda" if gpt > 0 else "cpu"}
    storage = args.storage or state.get("storage") or _sqlite(results / "optuna.db")
    uri = args.tracking_uri or state.get("tracking_uri") or _sqlite(results / "mlflow.db")
    plan = RunPlan(
        study=study.name, study_arg=args.study, results=results, storage=storage, tracking_uri=uri, ray_dir=ray_dir,
        checkpoint_dir=results / "checkpoints" / study.name, state_file=state_file, budget=budget,
        budget_note=note, base=base, resources={"cpu": cpt, "gpu": gpt}, max_concurrent=concurrent,
        resume=args.resume, asha=study.asha is not None and not args.no_asha, time_budget=args.time_budget,
    )
    plan.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    if args.resume:
        plan.tracking = tracking.find_parent(uri, study.name, state["parent_run_id"])
        tracking.reopen(plan.tracking)
    else:
        plan.tracking = tracking.start(uri, study.name, results / "mlartifacts", f"search {study.name}",
                                       {"budget": note}, shared=base)
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps({
            "study": study.name, "budget": budget.__dict__, "budget_note": note, "storage": storage,
            "tracking_uri": uri, "parent_run_id": plan.tracking.parent_run_id, "base": base,
        }, indent=2))
    return plan
