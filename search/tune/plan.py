"""Planning a search run: absolute paths, Ray start-up, resources per trial, budget (full or reduced), resume state.

Every path is made absolute here in the driver: a trial's working directory is a throwaway folder.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from pyarrow.fs import FileType

from search.core import faults
from search.core.layout import Results
from search.tracking import runs as tracking
from search.tracking.runs import Tracking
from search.tune.checkpoints import fs_and_path
from search.tune.resources import alive_nodes, check_every_node, fit_trials
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
    train_on_cpu: bool = False  # trials hold GPUs (logical ones, in the tests) but train on the CPU
    storage_path: str = ""  # where trials' checkpoints and Tune's state go (default <results>/ray)


@dataclass
class RunPlan:
    study: str
    study_arg: str  # as the user gave it (a name or a file), for the --resume hint
    results: Path
    storage: str
    tracking_uri: str
    storage_path: str  # an absolute path (local or NFS) or a pyarrow URI such as s3://bucket/prefix
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
            "storage": self.storage, "tracking_uri": self.tracking_uri, "storage_path": self.storage_path,
            "parent_run_id": self.tracking.parent_run_id, "base": self.base,
        })


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Make a private Ray cluster listen on 127.0.0.1 only. Ray binds its servers (GCS, raylet, workers, agents)
    to all interfaces unless its node address is a loopback one, and on Linux it replaces an asked-for 127.0.0.1
    by the machine's address unless `ray_constants.ENABLE_RAY_CLUSTER` is off (its switch for single-machine
    platforms), which is read only while the node starts: off for that moment, so nobody else on the network
    reaches the cluster's unauthenticated ports. Private (tests/test_internals.py checks it); `--address` clusters
    keep Ray's own rules."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _start_ray(address: str) -> None:
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            # A private cluster: a bare ray.init() would join whatever cluster /tmp/ray last recorded.
            with loopback_only():
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


def check_tracking_reaches_every_node(uri: str, nodes: int, results: Path) -> None:
    """On a cluster of several nodes, a local tracking store would be a different file on every node: refuse it,
    with the tracking server command to run instead."""
    if nodes <= 1 or not tracking.is_local(uri):
        return
    raise RuntimeError(
        f"the Ray cluster has {nodes} nodes, and trials on other nodes cannot log to the local MLflow store {uri} "
        "(each would write its own file, silently). Start a tracking server where every node reaches it, e.g. "
        f"`mlflow server --backend-store-uri sqlite:///{results / 'mlflow.db'} --artifacts-destination "
        f"{results / 'mlartifacts'} --serve-artifacts --host 0.0.0.0 --port 5000`, and pass "
        "--tracking-uri http://<that host>:5000")


def experiment_exists(storage_path: str, study: str) -> bool:
    """Whether the run's storage already holds Tune's state for this study (a folder that `--resume` continues)."""
    try:
        fs, root = fs_and_path(storage_path)
        return fs.get_file_info(f"{root}/{study}").type != FileType.NotFound
    except (OSError, ValueError) as exc:
        raise ValueError(f"--storage-path {storage_path} cannot be read ({exc}); give a folder every node reaches "
                         "(NFS) or a URI pyarrow understands (s3://bucket/prefix, gs://...)") from None


def plan_run(args: RunOptions, study: Study) -> RunPlan:
    layout = Results.at(args.results)
    results, state_file = layout.root, layout.state_file(study.name)
    state: dict[str, Any] = layout.read_state(study.name) if args.resume else {}
    storage_path = args.storage_path or state.get("storage_path") or str(layout.ray_dir)
    if "://" not in storage_path:
        storage_path = str(Path(storage_path).expanduser().resolve())
    exists = state_file.exists() or experiment_exists(storage_path, study.name)
    if exists and not args.resume:
        raise ValueError(
            f"{results} already holds a search of study {study.name!r} (see {state_file}); pass --resume to "
            "continue it, or --results NEW_FOLDER to start a new one")
    if args.resume and not state_file.exists():
        raise ValueError(f"nothing to resume: no search of study {study.name!r} in {results} (no {state_file})")
    data = Path(args.data).resolve() if args.data else None
    if data is not None and not data.is_dir():
        raise FileNotFoundError(f"--data {data} is not a folder")
    storage = args.storage or state.get("storage") or layout.optuna_url
    uri = args.tracking_uri or state.get("tracking_uri") or layout.mlflow_url
    open_stores(storage, uri, results, {layout.optuna_url, layout.mlflow_url})

    faults.arm_driver()  # only under the fault-injection tests (INPAINT_FAULT): workers inherit the driver's pid
    _start_ray(args.address)
    nodes = alive_nodes()
    check_tracking_reaches_every_node(uri, len(nodes), results)
    if len(nodes) > 1:
        check_every_node(nodes)
    fit = fit_trials(nodes, args.gpus_per_trial, args.cpus_per_trial)
    gpus = sum(n.gpus for n in nodes)
    if args.resume:
        budget, note = Budget(**state["budget"]), state["budget_note"] + " (resumed)"
    else:
        budget, note = _choose_budget(study, data is not None, gpus, args)
        if args.trials:
            budget = Budget(**{**budget.__dict__, "trials": args.trials})
    concurrent = args.max_concurrent or budget.max_concurrent or fit.slots
    concurrent = max(1, min(concurrent, fit.slots, budget.trials))

    base = {**study.fixed, **budget.flat(), "data.root": str(data) if data else "",
            "train.device": "cuda" if fit.gpu > 0 and not args.train_on_cpu else "cpu"}
    plan = RunPlan(
        study=study.name, study_arg=args.study, results=results, storage=storage, tracking_uri=uri,
        storage_path=storage_path, state_file=state_file, budget=budget,
        budget_note=note, base=base, resources={"cpu": fit.cpu, "gpu": fit.gpu}, max_concurrent=concurrent,
        resume=args.resume, asha=study.asha is not None and not args.no_asha, time_budget=args.time_budget or 0.0,
    )
    if args.resume:
        plan.tracking = tracking.find_parent(uri, study.name, state["parent_run_id"])
        tracking.reopen(plan.tracking)
    else:
        plan.tracking = tracking.start(uri, study.name, layout.artifacts, f"search {study.name}",
                                       {"budget": note}, shared=base)
    return plan
