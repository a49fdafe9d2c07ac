"""The search through the real stack at tiny size: local Ray, SQLite Optuna and MLflow in a temp folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import ray
import sqlalchemy.exc
from mlflow.tracking import MlflowClient

from search import run
from search.tune.study import available_studies, load_study

pytestmark = pytest.mark.slow


def _stores(results: Path, study: str):
    storage = f"sqlite:///{results / 'optuna.db'}"
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    exp = client.get_experiment_by_name(study)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return optuna.load_study(study_name=study, storage=storage), trials, client, parents, children


def test_smoke_study_fills_optuna_and_mlflow(tmp_path, capsys):
    results = tmp_path / "results"
    # First a run whose Optuna storage cannot be opened: one clear line, nothing written, no --resume needed next.
    not_a_folder = tmp_path / "a_file"
    not_a_folder.write_text("x")
    bad = f"sqlite:///{not_a_folder / 'x.db'}"
    assert run.main(["--study", "smoke", "--results", str(results), "--storage", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot open the Optuna storage" in err[0] and bad in err[0]
    assert not results.exists() and not ray.is_initialized()
    assert run.main(["--study", "smoke", "--results", str(results), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "optuna-dashboard sqlite:///" in out and "mlflow ui --backend-store-uri sqlite:///" in out
    assert "best full-budget trial" in out
    study, trials, client, parents, children = _stores(results, "smoke")
    assert len(trials) == 4
    assert {"study_file", "objective", "fixed", "budget"} <= set(study.user_attrs)
    states = {t.state for t in trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert optuna.trial.TrialState.COMPLETE in states
    for t in trials:
        # Every epoch is an intermediate value, the last one too.
        assert sorted(t.intermediate_values) == list(range(1, len(t.intermediate_values) + 1))
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert len(t.intermediate_values) == 3 and t.value == t.intermediate_values[3]
        else:
            assert len(t.intermediate_values) < 3
    assert trials[0].params == {"model.width": 8, "model.upsample": "transpose", "optim.lr": 1e-3,
                                "sched.kind": "constant"}  # the warm-start point comes first
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.params["model.depth"] == "2"  # values shared by every trial live on the parent
    assert len(children) == 4
    by_number = {int(r.data.tags["optuna_trial"]): r for r in children}
    for t in trials:
        r = by_number[t.number]
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert r.info.run_name == f"trial {t.number}"
        assert r.data.tags["ray_trial_id"] == t.user_attrs["ray_trial_id"]
        assert r.data.params == {k: str(v) for k, v in t.params.items()}  # the same keys and values as Optuna
        config = client.download_artifacts(r.info.run_id, "config.json", str(tmp_path / f"c{t.number}"))
        assert set(t.params) < set(json.loads(Path(config).read_text()))
        assert r.info.status == ("FINISHED" if t.state == optuna.trial.TrialState.COMPLETE else "KILLED")
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val/psnr_hole")]
        assert steps == list(range(1, len(t.intermediate_values) + 1))
        for key in ("train/loss", "lr", "val/ssim_hole", "val/l1_hole", "val/psnr"):
            assert key in r.data.metrics
        assert client.list_artifacts(r.info.run_id, "samples")


FAILING_STUDY = '''
"""Test study: one trial raises, one diverges, one is fine."""
from search.tune.study import Budget, Study

def space(trial):
    trial.suggest_categorical("loss.vgg_weights", ["shipped", "torchvision"])
    trial.suggest_categorical("optim.lr", [1e-3, 1e20])

STUDY = Study(
    name="failing", description="", space=space, asha=None,
    fixed={"model.depth": 2, "model.width": 8, "train.batch_size": 4, "loss.w_perceptual": 0.05,
           "train.precision": "fp32", "optim.grad_clip": 0.0},
    budget=Budget(trials=3, epochs=2, train_images=8, val_images=4, image_size=64, steps_per_epoch=3,
                  val_fraction=0.2, test_fraction=0.2),
    warm_start=[{"loss.vgg_weights": "torchvision", "optim.lr": 1e-3},
                {"loss.vgg_weights": "shipped", "optim.lr": 1e20},
                {"loss.vgg_weights": "shipped", "optim.lr": 1e-3}],
)
'''
# Every trial asks for torchvision's VGG16 file, which is never cached in the tests: every trial raises.
ALL_FAIL_STUDY = FAILING_STUDY.replace('["shipped", "torchvision"]', '["torchvision"]').replace(
    "trials=3", "trials=2").replace('"failing"', '"all_fail"')


@pytest.fixture()
def no_torch_hub(tmp_path, monkeypatch):
    """An empty torch hub: `loss.vgg_weights=torchvision` raises FileNotFoundError in the trial (never downloads)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def test_failing_trials_are_recorded_with_their_reason(tmp_path, no_torch_hub, capsys):
    study_file = tmp_path / "failing.py"
    study_file.write_text(FAILING_STUDY)
    results = tmp_path / "results"
    assert run.main(["--study", str(study_file), "--results", str(results)]) == 0
    _, trials, _, _, children = _stores(results, "failing")
    by = {(t.params["loss.vgg_weights"], t.params["optim.lr"]): t for t in trials}
    raised, diverged, fine = by[("torchvision", 1e-3)], by[("shipped", 1e20)], by[("shipped", 1e-3)]
    assert raised.state.name == "FAIL" and "FileNotFoundError" in raised.user_attrs["fail_reason"]
    assert diverged.state.name == "FAIL" and "diverged" in diverged.user_attrs["fail_reason"]
    assert fine.state.name == "COMPLETE"
    status = {int(r.data.tags["optuna_trial"]): r.info.status for r in children}
    assert len(children) == 3
    assert status[raised.number] == status[diverged.number] == "FAILED" and status[fine.number] == "FINISHED"
    assert "RUNNING" not in status.values()
    out = capsys.readouterr().out
    assert "2 trial(s) failed:" in out and f"1 x (#{raised.number}): FileNotFoundError" in out


def test_a_search_whose_every_trial_raises_exits_1_with_the_reasons(tmp_path, no_torch_hub, capsys):
    study_file = tmp_path / "all_fail.py"
    study_file.write_text(ALL_FAIL_STUDY.split("    warm_start=")[0] + ")\n")
    assert run.main(["--study", str(study_file), "--results", str(tmp_path / "r")]) == 1
    captured = capsys.readouterr()
    assert "2 trial(s) failed:" in captured.out and "2 x (#0, #1): FileNotFoundError" in captured.out
    assert "torchvision's VGG16 weights are not cached" in captured.out
    assert "no trial ran the full budget" in captured.err


def test_existing_results_need_resume_and_unknown_studies_are_listed(tmp_path, capsys):
    assert run.main(["--study", "nope"]) == 2
    assert "available: smoke, unet_losses" in capsys.readouterr().err
    results = tmp_path / "r"
    (results / "runs").mkdir(parents=True)
    (results / "runs" / "smoke.json").write_text("{}")
    assert run.main(["--study", "smoke", "--results", str(results)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert run.main(["--study", "smoke", "--results", str(tmp_path / "empty"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_unreachable_ray_cluster_is_a_clear_error_that_leaves_nothing_to_resume(tmp_path, capsys):
    results = tmp_path / "r"
    assert run.main(["--study", "smoke", "--results", str(results), "--address", "nonsense-address"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    assert "could not connect to the Ray cluster at nonsense-address" in err
    assert not (results / "runs" / "smoke.json").exists()  # the same command can simply be run again


def test_malformed_study_is_an_error_naming_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text(FAILING_STUDY.replace('"optim.grad_clip": 0.0', '"optim.grad_clpi": 0.0'))
    assert run.main(["--study", str(bad), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "optim.grad_clpi" in err and "did you mean optim.grad_clip?" in err and str(bad) in err
    (tmp_path / "empty.py").write_text("X = 1\n")
    assert run.main(["--study", str(tmp_path / "empty.py")]) == 2
    assert "must define STUDY" in capsys.readouterr().err


LR_LINE = '    trial.suggest_categorical("optim.lr", [1e-3, 1e20])'


@pytest.mark.parametrize("old, new, named", [
    # A misspelled key in the space, on one branch of a conditional parameter only.
    (LR_LINE, '    if trial.suggest_categorical("optim.lr", [1e-3, 1e20]) > 1:\n'
              '        trial.suggest_float("loss.w_stlye", 0.0, 1.0)', "unknown config key(s): loss.w_stlye"),
    # A value the config refuses.
    (LR_LINE, LR_LINE.replace("1e20]", "1e20, -1.0]"), "optim.lr must be > 0"),
    # The space function itself broken: the line in the study file is named.
    (LR_LINE, '    trial.suggest_categorcal("optim.lr", [1e-3, 1e20])', "space() raised AttributeError"),
])
def test_a_broken_space_fails_at_load_before_ray_starts(tmp_path, capsys, old, new, named):
    study_file = tmp_path / "broken.py"
    study_file.write_text(FAILING_STUDY.replace(old, new))
    started = time.perf_counter()
    assert run.main(["--study", str(study_file), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(study_file) in err and named in err
    assert time.perf_counter() - started < 15 and not ray.is_initialized() and not (tmp_path / "r").exists()


def test_every_study_in_studies_loads_and_its_space_is_valid():
    names = available_studies()
    assert {"smoke", "unet_losses"} <= set(names)
    for name in names:
        study = load_study(name)  # samples the space and checks every point against the config
        trial = optuna.create_study().ask()
        study.space(trial)
        assert trial.params and set(trial.params).isdisjoint(study.fixed), name
    assert load_study("unet_losses").objective == "val/psnr_hole"


@pytest.mark.parametrize("flag, value", [("--trials", "-1"), ("--trials", "0"), ("--max-concurrent", "0"),
                                         ("--cpus-per-trial", "0"), ("--gpus-per-trial", "-0.5"),
                                         ("--time-budget", "-5"), ("--trials", "many")])
def test_numeric_flags_are_range_checked_at_parse_time(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_:
        run.main(["--study", "smoke", "--results", str(tmp_path / "r"), flag, value])
    assert exit_.value.code == 2 and f"argument {flag}:" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


SLOW_STUDY = '''
"""Test study: slow enough to be killed mid-way."""
from search.tune.study import Budget, Study

def space(trial):
    trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)

STUDY = Study(
    name="slow", description="", space=space, asha=None,
    fixed={"model.depth": 2, "model.width": 8, "train.batch_size": 4, "loss.w_perceptual": 0.0,
           "train.precision": "fp32", "data.workers": 1},
    budget=Budget(trials=5, epochs=4, train_images=8, val_images=4, image_size=64, steps_per_epoch=10,
                  max_concurrent=2, val_fraction=0.2, test_fraction=0.2),
)
'''


def _kill_search_when(study_file: Path, results: Path, study: str, ready, interval: float, what: str) -> list:
    """Start `search.run` on a study file, SIGKILL its whole process group once `ready(trials)` holds for the
    study's Optuna trials (polled every `interval` s, for at most 240 s; `what` names the state in the failure),
    and return the trials seen at that moment."""
    cmd = [sys.executable, "-m", "search.run", "--study", str(study_file), "--results", str(results)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    storage = f"sqlite:///{results / 'optuna.db'}"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            time.sleep(interval)
            try:
                trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
            except (KeyError, sqlalchemy.exc.SQLAlchemyError):  # the driver has not created the study yet
                continue
            if ready(trials):
                return trials
        pytest.fail(f"the search never reached {what}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_sigkilled_search_resumes_without_duplicates(tmp_path):
    study_file = tmp_path / "slow.py"
    study_file.write_text(SLOW_STUDY)
    results = tmp_path / "results"
    # Killed once at least one trial has finished and others are running.
    _kill_search_when(study_file, results, "slow", lambda trials: any(t.state.is_finished() for t in trials)
                      and any(not t.state.is_finished() for t in trials), 1.0, "a state worth interrupting")
    assert run.main(["--study", str(study_file), "--results", str(results), "--resume"]) == 0
    _, trials, _, parents, children = _stores(results, "slow")
    assert len(trials) == 5 and all(t.state.name == "COMPLETE" for t in trials)
    assert all(sorted(t.intermediate_values) == [1, 2, 3, 4] for t in trials)
    assert len(parents) == 1 and len(children) == 5
    assert sorted(int(r.data.tags["optuna_trial"]) for r in children) == [t.number for t in trials]
    assert all(r.info.status == "FINISHED" for r in children)


ASHA_STUDY = '''
"""Test study: ASHA over fixed trials, one at a time, so an interrupted and an uninterrupted search can agree."""
from search.tune.study import Asha, Budget, Study

def space(trial):
    trial.suggest_float("optim.lr", 1e-5, 3e-2, log=True)

STUDY = Study(
    name="rungs", description="", space=space, asha=Asha(grace=1, reduction=2),
    fixed={"model.depth": 2, "model.width": 8, "train.batch_size": 4, "loss.w_perceptual": 0.0,
           "train.precision": "fp32", "data.workers": 1},
    budget=Budget(trials=7, epochs=4, train_images=8, val_images=4, image_size=64, steps_per_epoch=8,
                  max_concurrent=1, val_fraction=0.2, test_fraction=0.2),
    warm_start=[{"optim.lr": lr} for lr in (3e-3, 1e-5, 1e-2, 2e-5, 5e-3, 3e-5, 2e-2)],
)
'''


def _decisions(results: Path) -> list[tuple[int, str, int]]:
    trials = optuna.load_study(study_name="rungs", storage=f"sqlite:///{results / 'optuna.db'}").get_trials()
    return [(t.number, t.state.name, len(t.intermediate_values)) for t in trials]


def test_a_resumed_search_prunes_as_the_uninterrupted_one(tmp_path):
    """ASHA's rungs are rebuilt from the Optuna storage after a resume, so early stopping decides the same."""
    study_file = tmp_path / "rungs.py"
    study_file.write_text(ASHA_STUDY)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert run.main(["--study", str(study_file), "--results", str(whole)]) == 0
    expected = _decisions(whole)
    assert len(expected) == 7 and {s for _, s, _ in expected} == {"COMPLETE", "PRUNED"}

    # Killed once three trials have ended: the rungs then hold records the resumed search must know.
    trials = _kill_search_when(study_file, cut, "rungs", lambda trials: sum(t.state.is_finished() for t in trials)
                               >= 3, 0.5, "three finished trials")
    ended_before = sum(t.state.is_finished() for t in trials)
    assert ended_before < 7
    assert run.main(["--study", str(study_file), "--results", str(cut), "--resume"]) == 0
    got = _decisions(cut)
    assert got == expected
    # The comparison means something: the resumed part had pruning decisions to make.
    assert any(s == "PRUNED" for n, s, _ in expected if n >= ended_before)
