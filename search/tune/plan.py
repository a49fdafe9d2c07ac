"""Planning a search run: absolute paths, Ray start-up, resources per trial, budget (full or reduced), resume state.

Every path is made absolute here in the driver: a trial's working directory is a throwaway folder.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray

from search.core.layout import Results
from search.tracking import runs as tracking
from search.tracking.runs import Tracking
from search.tune.storage import open_storage
from search.tune.study import Budget, Study


@dataclass
class RunOptions:
    """What `search.run`'s flags ask for (None / empty: the default the flag's help names)."""

    study: str  # as the user gave it (a name or a file), for the --resume hint
    data: str = ""
    results: str = "results"
    trials: int | None = None
    max_concurrent: int | None = None
    gpus_per_trial: float | None = None
    cpus_per_trial: float | None = None
    time_budget: float | None = None
    address: str = ""
    storage: str = ""
    tracking_uri: str = ""
    resume: bool = False
    no_asha: bool = False
    full_budget: bool = False


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

    def write_state(self) -> None:
        """Record the search in its results folder (what --resume, retrain_best and evaluate read back). Written
        once every store is open and the Tuner is built, so a run that fails before that leaves no state behind
        and the next plain run needs no --resume."""
        if self.resume:
            return
        Results(self.results).write_state(self.study, {
            "study": self.study, "budget": self.budget.__dict__, "budget_note": self.budget_note,
            "storage": self.storage, "tracking_uri": self.tracking_uri,
            "parent_run_id": self.tracking.parent_run_id, "base": self.base,
        })


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


def stop_ray() -> None:
    """Shut down this process's Ray connection (and the private cluster it started), if any."""
    if ray.is_initialized():
        ray.shutdown()


def _choose_budget(study: Study, has_data: bool, gpus: float, args: RunOptions) -> tuple[Budget, str]:
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


def open_stores(storage: str, tracking_uri: str, results: Path, defaults: set[str]) -> None:
    """Open and check both stores before anything is written: URLs the user gave first, so that a bad one leaves
    no results folder behind; then the results folder and the default SQLite stores inside it."""
    for url in sorted((storage, tracking_uri), key=lambda u: u in defaults):
        if url in defaults:
            results.mkdir(parents=True, exist_ok=True)
        if url == storage:
            open_storage(url).engine.dispose()
        else:
            tracking.check_store(url)


def plan_run(args: RunOptions, study: Study) -> RunPlan:
    layout = Results.at(args.results)
    results, state_file, ray_dir = layout.root, layout.state_file(study.name), layout.ray_dir
    exists = state_file.exists() or (ray_dir / study.name).exists()
    if exists and not args.resume:
        raise ValueError(
            f"{results} already holds a search of study {study.name!r} (see {state_file}); pass --resume to "
            "continue it, or --results NEW_FOLDER to start a new one")
    if args.resume and not state_file.exists():
        raise ValueError(f"nothing to resume: no search of study {study.name!r} in {results} (no {state_file})")
    data = Path(args.data).resolve() if args.data else None
    if data is not None and not data.is_dir():
        raise FileNotFoundError(f"--data {data} is not a folder")
    state: dict[str, Any] = layout.read_state(study.name) if args.resume else {}
    storage = args.storage or state.get("storage") or layout.optuna_url
    uri = args.tracking_uri or state.get("tracking_uri") or layout.mlflow_url
    open_stores(storage, uri, results, {layout.optuna_url, layout.mlflow_url})

    _start_ray(args.address)
    cluster = ray.cluster_resources()
    cpus, gpus = float(cluster.get("CPU", 1)), float(cluster.get("GPU", 0))
    gpt = args.gpus_per_trial if args.gpus_per_trial is not None else (1.0 if gpus > 0 else 0.0)
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
    plan = RunPlan(
        study=study.name, study_arg=args.study, results=results, storage=storage, tracking_uri=uri, ray_dir=ray_dir,
        checkpoint_dir=layout.checkpoints(study.name), state_file=state_file, budget=budget,
        budget_note=note, base=base, resources={"cpu": cpt, "gpu": gpt}, max_concurrent=concurrent,
        resume=args.resume, asha=study.asha is not None and not args.no_asha, time_budget=args.time_budget or 0.0,
    )
    plan.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    if args.resume:
        plan.tracking = tracking.find_parent(uri, study.name, state["parent_run_id"])
        tracking.reopen(plan.tracking)
    else:
        plan.tracking = tracking.start(uri, study.name, layout.artifacts, f"search {study.name}",
                                       {"budget": note}, shared=base)
    return plan
