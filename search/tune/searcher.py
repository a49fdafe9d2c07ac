"""Optuna as the source of truth inside Ray Tune: every epoch an intermediate value, honest end states.

Ray 2.60's OptunaSearch skips the last epoch's value, records scheduler-stopped trials as COMPLETE and gives no
reason for errors. This subclass reports every epoch, ends trials COMPLETE (full budget), PRUNED (stopped early)
or FAIL (with `fail_reason`), and after a crash re-uses trials Tune never recorded instead of duplicating them.

It relies on OptunaSearch's private `_ot_trials`, `_ot_study` and `_completed_trials` and on Optuna's
`FrozenTrial._trial_id`: pyproject.toml bounds Ray and Optuna to the tested releases, and
tests/test_internals.py checks each reliance, so an upgrade fails loudly instead of misbehaving.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from search.core import faults
from search.tune.checkpoints import uri_of

log = logging.getLogger(__name__)
OPTUNA_NUMBER_KEY = "_optuna_trial"  # added to each Ray config so trainables and callbacks know the number
PLACEMENT_KEYS = ("node_id", "gpu_ids", "start_epoch")  # reported by the trainable with every epoch
_TRIALS: dict[str, Any] = {}  # Ray trial id -> Trial, in the driver; filled by TrialRegistry


class TrialRegistry(tune.Callback):
    """Remembers Ray trials by id, so the searcher can read an errored trial's error file."""

    def on_trial_start(self, iteration, trials, trial, **info):
        _TRIALS[trial.trial_id] = trial


def trial_number(trial) -> int:
    """The Optuna trial number the searcher put into a Ray trial's config (-1 before it had one)."""
    return int(trial.config.get(OPTUNA_NUMBER_KEY, -1))


def fail_reason(trial_id: str) -> str:
    """The last line of the trial's traceback (Tune writes it before it tells the searcher)."""
    trial = _TRIALS.get(trial_id)
    path = getattr(trial, "error_file", None)
    if path and Path(path).exists():
        lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1][:1000] if lines else "unknown error"
    return "error (no error file)"


def checkpoint_uri(trial_id: str) -> str:
    """Where the trial's last checkpoint is in the run's storage (a path, or a URI on remote storage)."""
    checkpoint = getattr(_TRIALS.get(trial_id), "checkpoint", None)
    return uri_of(checkpoint.filesystem, checkpoint.path) if checkpoint is not None else ""


class TruthfulOptunaSearch(OptunaSearch):
    """OptunaSearch with per-epoch intermediate values and COMPLETE / PRUNED / FAIL end states."""

    def __init__(self, space, *, max_epochs: int, epoch_attr: str = "epoch", points_to_evaluate=(), **kwargs):
        super().__init__(space, **kwargs)
        self._max_epochs, self._epoch_attr = max_epochs, epoch_attr
        self._orphans: list[int] = []  # storage ids of RUNNING trials Tune lost in a crash
        self._last_step: dict[str, int] = {}
        self._placed: dict[str, tuple] = {}  # Ray trial id -> the (node, GPUs, start epoch) last recorded
        # The base class enqueues points_to_evaluate on every construction; do it once per study.
        for point in points_to_evaluate:
            self._ot_study.enqueue_trial(point, skip_if_exists=True)

    @property
    def study(self):
        return self._ot_study

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials and self._orphans:
            # Re-use a trial asked just before a crash rather than leaving it RUNNING and asking a new one:
            # suggest_* on it returns the parameters it already has.
            self._ot_trials[trial_id] = optuna.Trial(self._ot_study, self._orphans.pop(0))
        config = super().suggest(trial_id)
        ot = self._ot_trials[trial_id]
        ot.set_user_attr("ray_trial_id", trial_id)
        faults.hit("trial_created")  # asked in Optuna, not yet known to Tune
        if config is not None:
            config[OPTUNA_NUMBER_KEY] = ot.number
        return config

    def _place(self, trial_id: str, ot: optuna.Trial, result: dict) -> None:
        """Record where the trial runs: the latest node and GPUs, and every (re)start with the epoch it resumed
        from, so a trial moved after a node loss shows it."""
        where = tuple(result.get(k) for k in PLACEMENT_KEYS)
        if where[0] is None or self._placed.get(trial_id) == where:
            return
        self._placed[trial_id] = where
        entry = dict(zip(PLACEMENT_KEYS, where, strict=True))
        history = list(ot.user_attrs.get("placements", []))  # kept in storage: a resumed driver continues it
        if not history or history[-1] != entry:
            history.append(entry)
        ot.set_user_attr("node_id", entry["node_id"])
        ot.set_user_attr("gpu_ids", entry["gpu_ids"])
        ot.set_user_attr("placements", history)

    def _report(self, trial_id: str, result: dict) -> None:
        ot = self._ot_trials.get(trial_id)
        if ot is None or trial_id in self._completed_trials or self.metric not in result:
            return
        self._place(trial_id, ot, result)
        step = int(result[self._epoch_attr])
        if self._last_step.get(trial_id) == step:  # the final result can arrive twice (result and complete)
            return
        self._last_step[trial_id] = step
        try:
            ot.report(float(result[self.metric]), step)
            faults.hit("optuna_recorded")
        except optuna.exceptions.UpdateFinishedTrialError:
            # Finished in storage before a crash, and reported again by the resumed trial: nothing to add.
            # Any other error (the storage itself failing) propagates: the search stops and says so.
            log.info("trial %s already finished in Optuna; epoch %d not reported again", trial_id, step)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot = self._ot_trials.get(trial_id)
        if ot is None or trial_id in self._completed_trials:
            return
        value = None
        if error or not result or self.metric not in result:
            state = TrialState.FAIL
            ot.set_user_attr("fail_reason", fail_reason(trial_id) if error else "ended without a result")
        else:
            self._report(trial_id, result)  # Tune never passes the final epoch to on_trial_result
            if int(result[self._epoch_attr]) >= self._max_epochs:
                state, value = TrialState.COMPLETE, float(result[self.metric])
                ot.set_user_attr("checkpoint", checkpoint_uri(trial_id))  # its final weights, for evaluate
            else:
                state = TrialState.PRUNED  # Optuna keeps the last intermediate value as its value
        # skip_if_finished: a trial finished in storage before a crash is left as it is; storage errors propagate.
        self._ot_study.tell(ot, value, state=state, skip_if_finished=True)
        self._completed_trials.add(trial_id)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        # The storage is the truth; Tune's snapshot may lag a crash by a second.
        stored = {t.number: t for t in self._ot_study.get_trials(deepcopy=False)}
        for trial_id, ot in self._ot_trials.items():
            if ot.number in stored and stored[ot.number].state.is_finished():
                self._completed_trials.add(trial_id)
        known = {ot.number for ot in self._ot_trials.values()}
        # Asked after the last snapshot: Tune never heard of them; the next suggestions take them over.
        self._orphans = [f._trial_id for n, f in sorted(stored.items())
                         if f.state == TrialState.RUNNING and n not in known]
