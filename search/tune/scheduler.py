"""ASHA whose rung records survive a driver restart, rebuilt from the intermediate values in the Optuna storage.

Tune pickles the scheduler into `tuner.pkl` when a search starts and never saves it again, so after `--resume`
Ray's ASHAScheduler starts with empty rungs: with nothing to compare against, the first trials to reach each rung
pass it, and a resumed search prunes later and less than the same search uninterrupted (measured on the default
study: trials pruned after 2 epochs instead of 1, a wide trial let past epoch 2). The storage holds every trial's
objective at every epoch, so the rungs are refilled from it before the first trial of the process is added: each
trial that reached a milestone is recorded there with its value, under its Ray trial id (the searcher's user
attribute `ray_trial_id`), so a restored trial is not judged twice at a rung it already passed.

Relies on ASHAScheduler's private `_brackets`, `_Bracket._rungs` and `_metric_op` (tests/test_internals.py).
"""

from __future__ import annotations

import optuna
from ray.tune.schedulers import ASHAScheduler

from search.tune.storage import open_storage


class ResumableASHA(ASHAScheduler):
    """ASHAScheduler that seeds its rungs from the study's stored intermediate values on its first use."""

    def __init__(self, *, storage: str, study_name: str, **kwargs):
        super().__init__(**kwargs)
        self._storage, self._study_name, self._seeded = storage, study_name, False

    def seed(self) -> int:
        """Record every stored trial at each milestone it reached; returns how many records were added."""
        self._seeded = True
        try:
            study = optuna.load_study(study_name=self._study_name, storage=open_storage(self._storage))
        except KeyError:
            return 0  # a new study: nothing recorded yet
        added = 0
        for t in study.get_trials(deepcopy=False):
            key = t.user_attrs.get("ray_trial_id") or f"optuna-{t.number}"
            for bracket in self._brackets:
                for milestone, recorded in bracket._rungs:
                    value = t.intermediate_values.get(int(milestone))
                    if value is not None and float(milestone).is_integer() and key not in recorded:
                        recorded[key] = self._metric_op * value
                        added += 1
        return added

    def on_trial_add(self, tune_controller, trial) -> None:
        if not self._seeded:  # False in tuner.pkl, so once per driver process, fresh or resumed
            self.seed()
        super().on_trial_add(tune_controller, trial)
