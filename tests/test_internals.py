"""The private internals of Ray and Optuna that search.tune.searcher relies on, each checked directly.

pyproject.toml bounds Ray and Optuna to the releases these tests pass on; whoever raises a bound runs these first:
a failure here names the internal that moved, instead of a search that misbehaves later.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from search.tune.searcher import OPTUNA_NUMBER_KEY, TruthfulOptunaSearch


def _space(trial) -> None:
    trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    trial.suggest_categorical("model.width", [8, 16])


def _searcher(storage, warm=()):
    return TruthfulOptunaSearch(_space, metric="val/psnr_hole", mode="max", max_epochs=2, storage=storage,
                                study_name="internals", sampler=optuna.samplers.RandomSampler(seed=0),
                                points_to_evaluate=list(warm))


def test_optuna_search_keeps_its_trials_study_and_completed_set():
    storage = optuna.storages.InMemoryStorage()
    searcher = _searcher(storage)
    assert isinstance(searcher._ot_study, optuna.Study), "OptunaSearch._ot_study moved"
    assert isinstance(searcher._completed_trials, set), "OptunaSearch._completed_trials moved"
    config = searcher.suggest("ray-a")
    assert isinstance(searcher._ot_trials["ray-a"], optuna.Trial), "OptunaSearch._ot_trials moved"
    assert config[OPTUNA_NUMBER_KEY] == 0 and set(config) == {"optim.lr", "model.width", OPTUNA_NUMBER_KEY}
    searcher.on_trial_result("ray-a", {"epoch": 1, "val/psnr_hole": 20.0})
    searcher.on_trial_complete("ray-a", {"epoch": 2, "val/psnr_hole": 21.0})
    stored = searcher.study.get_trials(deepcopy=False)[0]
    assert stored.state == TrialState.COMPLETE and stored.intermediate_values == {1: 20.0, 2: 21.0}
    assert "ray-a" in searcher._completed_trials


def test_a_running_trial_can_be_taken_over_by_its_storage_id():
    """After a crash, a trial asked but never run is re-used through `optuna.Trial(study, FrozenTrial._trial_id)`:
    its parameters come back unchanged and no new trial is created."""
    storage = optuna.storages.InMemoryStorage()
    first = _searcher(storage)
    asked = first.suggest("ray-a")
    frozen = first.study.get_trials(deepcopy=False)[0]
    assert isinstance(frozen._trial_id, int), "optuna FrozenTrial._trial_id moved"
    second = _searcher(storage)
    second._orphans = [frozen._trial_id]  # what restore() finds: RUNNING in storage, unknown to Tune
    again = second.suggest("ray-b")
    assert again == asked and len(second.study.get_trials(deepcopy=False)) == 1
    second.on_trial_complete("ray-b", {"epoch": 1, "val/psnr_hole": 19.0})
    assert second.study.get_trials(deepcopy=False)[0].state == TrialState.PRUNED  # stopped before 2 epochs


def test_warm_start_points_are_enqueued_once_per_study():
    storage = optuna.storages.InMemoryStorage()
    warm = [{"optim.lr": 3e-4, "model.width": 16}]
    _searcher(storage, warm)
    searcher = _searcher(storage, warm)  # a resumed search constructs it again
    waiting = [t for t in searcher.study.get_trials(deepcopy=False) if t.state == TrialState.WAITING]
    assert len(waiting) == 1
    assert {k: v for k, v in searcher.suggest("ray-a").items() if k != OPTUNA_NUMBER_KEY} == warm[0]


def test_asha_keeps_its_rungs_per_bracket_and_its_metric_sign():
    from search.tune.scheduler import ResumableASHA

    sched = ResumableASHA(storage="sqlite://", study_name="none", time_attr="epoch", max_t=4, grace_period=1,
                          reduction_factor=2)
    assert sched.set_search_properties("val/psnr_hole", "max")
    assert sched._metric_op == 1.0, "ASHAScheduler._metric_op moved"
    [bracket] = sched._brackets
    milestones = [m for m, recorded in bracket._rungs]
    assert milestones == [4, 2, 1] and all(r == {} for _, r in bracket._rungs), "_Bracket._rungs moved"


def test_ray_reads_its_single_machine_switch_when_a_node_starts():
    from ray._private import ray_constants, services

    from search.tune.plan import loopback_only

    assert isinstance(ray_constants.ENABLE_RAY_CLUSTER, bool), "ray_constants.ENABLE_RAY_CLUSTER moved"
    with loopback_only():
        assert services.get_node_ip_address() == "127.0.0.1", "services.get_node_ip_address ignores the switch"
    assert ray_constants.ENABLE_RAY_CLUSTER is True  # put back: clusters joined with --address keep Ray's rules
