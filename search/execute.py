"""Running a planned search: OptunaSearch on persistent storage, ASHA, a Tuner (fresh or restored), the report."""

from __future__ import annotations

import json
from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from search import summary as summ
from search import tracking
from search.optuna_search import OPTUNA_NUMBER_KEY, TrialRegistry, TruthfulOptunaSearch, fail_reason
from search.run_setup import RunPlan
from search.space import Study
from search.trainable import CheckpointJanitor, TrialContext, trainable

# Shown first in the end-of-run table when a study searches them.
KEY_PARAMS = ("model.depth", "model.width", "model.prefill", "model.residual", "loss.recon", "loss.w_perceptual",
              "loss.w_tv", "optim.lr", "sched.kind")


class ProgressLine(tune.Callback):
    """One line per finished trial instead of Ray's tables."""

    def __init__(self, objective: str, max_epochs: int, total: int):
        self.objective, self.max_epochs, self.total, self.done = objective, max_epochs, total, 0

    def _line(self, trial, state: str, reason: str = "") -> None:
        self.done += 1
        r = trial.last_result or {}
        number = trial.config.get(OPTUNA_NUMBER_KEY, "?")
        seconds = r.get("time_total_s", 0.0)  # Tune's own clock: start hooks are skipped for reused actors
        value = r.get(self.objective)
        shown = f"{self.objective} {value:.3f}" if isinstance(value, float) else "no result"
        print(f"[{self.done}/{self.total}] trial {number}: {state} after {r.get('epoch', 0)} epoch(s), {shown} "
              f"({seconds:.0f} s){': ' + reason if reason else ''}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        full = (trial.last_result or {}).get("epoch", 0) >= self.max_epochs
        self._line(trial, "COMPLETE" if full else "PRUNED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, "FAIL", fail_reason(trial.trial_id)[:200])


def _searcher(plan: RunPlan, study: Study) -> TruthfulOptunaSearch:
    storage = optuna.storages.RDBStorage(plan.storage, engine_kwargs={"connect_args": {"timeout": 60}}
                                         if plan.storage.startswith("sqlite") else {})
    searcher = TruthfulOptunaSearch(
        study.space, metric=study.objective, mode=study.mode, max_epochs=plan.budget.epochs,
        sampler=optuna.samplers.TPESampler(seed=study.seed), storage=storage, study_name=study.name,
        points_to_evaluate=study.warm_start,
    )
    s = searcher.study
    s.set_user_attr("study_file", study.source)
    s.set_user_attr("objective", f"{study.objective} ({study.mode})")
    s.set_user_attr("fixed", json.dumps(plan.base, default=str))
    s.set_user_attr("budget", plan.budget_note)
    return searcher


def run(plan: RunPlan, study: Study) -> dict[str, Any]:
    ctx = TrialContext(base=plan.base, tracking=plan.tracking, checkpoint_dir=str(plan.checkpoint_dir),
                       threads=max(1, int(plan.resources["cpu"])))
    fn = tune.with_resources(tune.with_parameters(trainable, ctx=ctx), plan.resources)
    exp_path = plan.ray_dir / study.name
    print(f"search.run: study {study.name}, objective {study.objective} ({study.mode}); {plan.budget_note}")
    print(f"search.run: {plan.max_concurrent} trial(s) at once, each with {plan.resources['cpu']:g} CPU and "
          f"{plan.resources['gpu']:g} GPU; results in {plan.results}", flush=True)
    if plan.resume and tune.Tuner.can_restore(str(exp_path)):
        tuner = tune.Tuner.restore(str(exp_path), trainable=fn, resume_unfinished=True, resume_errored=False)
    else:
        scheduler = ASHAScheduler(time_attr="epoch", max_t=plan.budget.epochs, grace_period=study.asha.grace,
                                  reduction_factor=study.asha.reduction) if plan.asha else None
        tuner = tune.Tuner(
            fn,
            tune_config=tune.TuneConfig(
                search_alg=_searcher(plan, study), scheduler=scheduler, metric=study.objective, mode=study.mode,
                num_samples=plan.budget.trials, max_concurrent_trials=plan.max_concurrent, reuse_actors=True,
                time_budget_s=plan.time_budget or None),
            run_config=tune.RunConfig(
                name=study.name, storage_path=str(plan.ray_dir), verbose=0,
                callbacks=[TrialRegistry(), tracking.MlflowStatus(plan.tracking, plan.budget.epochs),
                           CheckpointJanitor(ctx, plan.budget.epochs),
                           ProgressLine(study.objective, plan.budget.epochs, plan.budget.trials)]),
        )
    grid = tuner.fit()
    # Ctrl-C makes fit() return early with unfinished trials; a time budget ends the search on purpose.
    all_ended = grid.num_terminated + grid.num_errors == len(grid)
    finished = all_ended and (len(grid) >= plan.budget.trials or bool(plan.time_budget))
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
    else:
        print("no trial ran the full budget yet")
    if not report["finished"]:
        print(f"search.run: interrupted before the target of {plan.budget.trials} trials; continue with "
              f"python -m search.run --study {plan.study_arg} --results {plan.results} --resume")
    print("dashboards for this run:")
    for cmd in summ.dashboard_commands(plan.storage, plan.tracking_uri, plan.tracking.experiment_id):
        print(f"  {cmd}")
