"""Running a planned search: OptunaSearch on persistent storage, ASHA, a Tuner (fresh or restored), the report.

The driver decodes the training images once and puts them into Ray's object store, where every trial on every node
reads them without a copy (measured against a shared path in benchmarks/data_transport.py; see the README).
"""

from __future__ import annotations

import json
import time
from typing import Any

import optuna
import ray
from ray import tune

from search.core import faults
from search.core.config import Config
from search.core.train import load_data
from search.tracking import runs as tracking
from search.tune import summary as summ
from search.tune.callbacks import DISK_FULL, CheckpointJanitor, MlflowStatus, ProgressLine, StopWhenStorageIsFull
from search.tune.checkpoints import repair_before_restore
from search.tune.plan import RunPlan
from search.tune.scheduler import ResumableASHA
from search.tune.searcher import TrialRegistry, TruthfulOptunaSearch, trial_number
from search.tune.storage import open_storage
from search.tune.study import Study
from search.tune.trainable import Probe, TrialContext, data_key, to_payload, trainable

RETRIES = 2  # a trial whose worker or node is lost restarts (from its checkpoint) up to this many times
STORE_SHARE = 0.8  # the images go to the object store only if they take at most this share of the driver node's
                   # store (helper measurements: store use = image bytes + ~0.3%)

# Shown first in the end-of-run table when a study searches them.
KEY_PARAMS = ("model.depth", "model.width", "model.prefill", "model.residual", "loss.recon", "loss.w_perceptual",
              "loss.w_tv", "optim.lr", "sched.kind")


def _searcher(plan: RunPlan, study: Study) -> TruthfulOptunaSearch:
    searcher = TruthfulOptunaSearch(
        study.space, metric=study.objective, mode=study.mode, max_epochs=plan.budget.epochs,
        sampler=optuna.samplers.TPESampler(seed=study.seed), storage=open_storage(plan.storage), study_name=study.name,
        points_to_evaluate=study.warm_start,
    )
    s = searcher.study
    s.set_user_attr("study_file", study.source)
    s.set_user_attr("objective", f"{study.objective} ({study.mode})")
    s.set_user_attr("fixed", json.dumps(plan.base, default=str))
    s.set_user_attr("budget", plan.budget_note)
    return searcher


def trial_dirname(trial) -> str:
    """A trial's folder in the storage: its Optuna number and Ray id (Tune's default strings every parameter)."""
    return f"trial_{trial_number(trial):04d}_{trial.trial_id}"


def share_images(base: dict[str, Any]) -> tuple[tuple, list] | None:
    """Decode the images every trial trains on once, here, and put them into Ray's object store; None (trials
    then read `data.root` themselves, which must exist on every node) when they would crowd the store."""
    cfg = Config.from_flat({**Config().to_flat(), **{k: v for k, v in base.items() if not k.startswith("_")}})
    t0 = time.perf_counter()
    sets = load_data(cfg)
    payload = to_payload(sets)
    size = sum(px.nbytes for px, _ in payload.values())
    here = ray.get_runtime_context().get_node_id()
    capacity = next((n["Resources"].get("object_store_memory", 0) for n in ray.nodes() if n["NodeID"] == here), 0)
    if size > STORE_SHARE * capacity:
        source = cfg.data.root or "the embedded images"
        print(f"search.run: the images take {size / 2**20:.0f} MiB, more than {STORE_SHARE:.0%} of this node's "
              f"object store ({capacity / 2**20:.0f} MiB): each trial decodes them from {source} itself (give the "
              "Ray node more --object-store-memory to share them)", flush=True)
        return None
    ref = ray.put(payload)
    counts = ", ".join(f"{len(s)} {k}" for k, s in sets.items())
    print(f"search.run: images ({counts}; {size / 2**20:.0f} MiB) decoded and put into Ray's object store in "
          f"{time.perf_counter() - t0:.1f} s; trials on every node read them from there", flush=True)
    return data_key(cfg), [ref]


def run(plan: RunPlan, study: Study, probe: Probe | None = None) -> dict[str, Any]:
    """Run (or continue) the planned search to its end and return the summary read from the Optuna storage;
    `probe` adds figures to every trial's reports (see `TrialContext`)."""
    print(f"search.run: study {study.name}, objective {study.objective} ({study.mode}); {plan.budget_note}")
    ctx = TrialContext(base=plan.base, tracking=plan.tracking, threads=max(1, int(plan.resources["cpu"])),
                       probe=probe, data=share_images(plan.base))
    fn = tune.with_resources(tune.with_parameters(trainable, ctx=ctx), plan.resources)
    exp_path = f"{plan.storage_path}/{study.name}"
    print(f"search.run: {plan.max_concurrent} trial(s) at once, each with {plan.resources['cpu']:g} CPU and "
          f"{plan.resources['gpu']:g} GPU; results in {plan.results}; trial checkpoints in {plan.storage_path}",
          flush=True)
    if plan.resume and tune.Tuner.can_restore(exp_path):
        for line in repair_before_restore(exp_path):
            print(f"search.run: checkpoint repaired: {line}")
        tuner = tune.Tuner.restore(exp_path, trainable=fn, resume_unfinished=True, resume_errored=False)
    else:
        scheduler = ResumableASHA(storage=plan.storage, study_name=study.name, time_attr="epoch",
                                  max_t=plan.budget.epochs, grace_period=study.asha.grace,
                                  reduction_factor=study.asha.reduction) if plan.asha else None
        tuner = tune.Tuner(
            fn,
            tune_config=tune.TuneConfig(
                search_alg=_searcher(plan, study), scheduler=scheduler, metric=study.objective, mode=study.mode,
                num_samples=plan.budget.trials, max_concurrent_trials=plan.max_concurrent, reuse_actors=True,
                trial_dirname_creator=trial_dirname,
                time_budget_s=plan.time_budget or None),
            run_config=tune.RunConfig(
                name=study.name, storage_path=plan.storage_path, verbose=0,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=RETRIES),
                callbacks=[TrialRegistry(), MlflowStatus(plan.tracking, plan.budget.epochs),
                           CheckpointJanitor(plan.budget.epochs),
                           ProgressLine(study.objective, plan.budget.epochs, plan.budget.trials),
                           StopWhenStorageIsFull(f"python -m search.run --study {plan.study_arg} --results "
                                                 f"{plan.results} --resume")]),
        )
    plan.write_state()
    try:
        grid = tuner.fit()
    except (OSError, EOFError):
        if not DISK_FULL:
            raise
        grid = None  # Tune could not read its own files back from the full disk; the stores hold the truth
    # Ctrl-C (or a full disk) makes fit() return early with unfinished trials; a time budget ends it on purpose.
    all_ended = grid is not None and grid.num_terminated + grid.num_errors == len(grid)
    finished = all_ended and not DISK_FULL and (len(grid) >= plan.budget.trials or bool(plan.time_budget))
    faults.hit("summary")
    orphans = tracking.close_parent(plan.tracking, "FINISHED" if finished else "KILLED")
    report = summ.summarise(plan.storage, study.name, study.mode)
    report.update(finished=finished, budget=plan.budget_note, storage=plan.storage, tracking_uri=plan.tracking_uri,
                  mlflow_experiment_id=plan.tracking.experiment_id, orphaned_runs_failed=orphans)
    _print_report(report, study, plan)
    return report


def _print_report(report: dict[str, Any], study: Study, plan: RunPlan) -> None:
    searched = {k for t in report["trials"] for k in t["params"]}
    keys = [k for k in KEY_PARAMS if k in searched] + sorted(searched - set(KEY_PARAMS))
    keys = keys[:9]  # the table stays readable; every parameter is in the JSON and the dashboards
    print()
    print(summ.table(report, study.objective, keys))
    counts = ", ".join(f"{n} {s}" for s, n in sorted(report["counts"].items()))
    print(f"\nsearch.run: {len(report['trials'])} Optuna trials ({counts})")
    best = report["best"]
    if best:
        print(f"best full-budget trial: #{best['number']} {study.objective} = {best['value']:.4f}")
        print("  " + ", ".join(f"{k}={summ.short(v)}" for k, v in sorted(best["params"].items())))
        if best.get("checkpoint"):
            print(f"  its final weights: {best['checkpoint']} (python -m search.evaluate --model <that>)")
    else:
        print("no trial ran the full budget")
    groups = summ.failures(report)
    if groups:
        print(f"search.run: {sum(len(g['trials']) for g in groups)} trial(s) failed:")
        for g in groups:
            numbers = ", ".join(f"#{n}" for n in g["trials"])
            print(f"  {len(g['trials'])} x ({numbers}): {g['reason']}")
    if not report["finished"]:
        print(f"search.run: interrupted before the target of {plan.budget.trials} trials; continue with "
              f"python -m search.run --study {plan.study_arg} --results {plan.results} --resume")
    print("dashboards for this run:")
    for cmd in summ.dashboard_commands(plan.storage, plan.tracking_uri, plan.tracking.experiment_id):
        print(f"  {cmd}")
