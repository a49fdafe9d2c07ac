"""Driver-side Tune callbacks: one line per finished trial, MLflow end statuses, checkpoint clean-up, and a stop
(as Ctrl-C) when a disk is full.

They run in the driver, so a trial that Tune stops between two reports (ASHA, a time budget) still gets its MLflow
status and its checkpoint decision: code after the trainable's last report may never run.
"""

from __future__ import annotations

import os
import signal

from ray import tune

from search.tracking import runs as tracking
from search.tracking.runs import Tracking
from search.tune.checkpoints import delete_trial_checkpoints
from search.tune.searcher import OPTUNA_NUMBER_KEY, fail_reason, trial_number


class ProgressLine(tune.Callback):
    """One line per finished trial instead of Ray's tables."""

    def __init__(self, objective: str, max_epochs: int, total: int):
        self.objective, self.max_epochs, self.total, self.done = objective, max_epochs, total, 0
        self.last: dict[str, dict] = {}  # Ray trial id -> its last result (Tune clears it before a retry)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.last[trial.trial_id] = result

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

    def on_trial_recover(self, iteration, trials, trial, **info):
        # Tune restarts a trial whose worker or node died (FailureConfig); said, so a retry is never silent.
        r = trial.last_result or self.last.get(trial.trial_id, {})
        where = f" on node {str(r['node_id'])[:12]}" if r.get("node_id") else ""
        print(f"trial {trial.config.get(OPTUNA_NUMBER_KEY, '?')}: failed{where} after {r.get('epoch', 0)} epoch(s) "
              f"({fail_reason(trial.trial_id)[:160]}); retrying from its last checkpoint (failure "
              f"{trial.num_failures} of {trial.max_failures} allowed)", flush=True)


class MlflowStatus(tune.Callback):
    """Ends each trial's run with the status that matches its Optuna state."""

    def __init__(self, tr: Tracking, max_epochs: int):
        self.tr, self.max_epochs = tr, max_epochs

    def on_trial_complete(self, iteration, trials, trial, **info):
        epoch = (trial.last_result or {}).get("epoch", 0)
        tracking.set_status(self.tr, trial_number(trial), "FINISHED" if epoch >= self.max_epochs else "KILLED")

    def on_trial_error(self, iteration, trials, trial, **info):
        tracking.set_status(self.tr, trial_number(trial), "FAILED")


class CheckpointJanitor(tune.Callback):
    """Deletes the checkpoints of pruned and failed trials from the run's storage (whichever filesystem it is);
    full-budget trials keep their last one (its location is the Optuna user attribute `checkpoint`)."""

    def __init__(self, max_epochs: int):
        self.max_epochs = max_epochs

    @staticmethod
    def _delete(trial) -> None:
        delete_trial_checkpoints(trial.storage.storage_filesystem, trial.storage.trial_fs_path)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if (trial.last_result or {}).get("epoch", 0) < self.max_epochs:
            self._delete(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._delete(trial)


DISK_FULL: list[str] = []  # in the driver: the reason, once a full disk stopped the search


class StopWhenStorageIsFull(tune.Callback):
    """A trial that fails because a disk is full stops the whole search the way Ctrl-C does (Tune saves its state,
    running trials stay unfinished), instead of every trial failing in turn: once space is freed, `--resume`
    continues them from their checkpoints. Said once, with what to do."""

    def __init__(self, resume_hint: str):
        self.resume_hint = resume_hint

    def _check(self, trial) -> None:
        reason = fail_reason(trial.trial_id)
        if DISK_FULL or "No space left on device" not in reason:
            return
        DISK_FULL.append(reason)
        print(f"search.run: a disk is full ({reason[:200]}): stopping the search; free some space, then continue "
              f"with {self.resume_hint}", flush=True)
        os.kill(os.getpid(), signal.SIGINT)  # Tune's own graceful stop, as a Ctrl-C

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._check(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._check(trial)
