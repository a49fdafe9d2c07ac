"""search.retrain_best: picks the best full-budget trial from a real Optuna storage, trains it with checkpoints,
resumes after a SIGKILL, logs and registers the model in a real MLflow store, evaluates on the test split."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from search import retrain_best
from search.core.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DIST = {"model.width": IntDistribution(4, 8), "model.upsample": CategoricalDistribution(["transpose", "bilinear"]),
        "optim.lr": FloatDistribution(1e-4, 1e-2, log=True), "sched.kind": CategoricalDistribution(["constant"])}


def _trial(width: int, state: TrialState, value: float | None, epochs: int) -> optuna.trial.FrozenTrial:
    params = {"model.width": width, "model.upsample": "bilinear", "optim.lr": 2e-3, "sched.kind": "constant"}
    return create_trial(state=state, value=value, params=params, distributions=DIST,
                        intermediate_values={e: (value or 20.0) for e in range(1, epochs + 1)})


@pytest.fixture
def search_results(tmp_path) -> Path:
    """Results of a finished `smoke` search, as search.run leaves them in Optuna: 2 complete, 1 pruned, 1 failed."""
    results = tmp_path / "results"
    results.mkdir()
    study = optuna.create_study(study_name="smoke", storage=f"sqlite:///{results / 'optuna.db'}",
                                direction="maximize")
    study.add_trial(_trial(8, TrialState.COMPLETE, 12.0, 3))
    study.add_trial(_trial(6, TrialState.COMPLETE, 14.0, 3))
    study.add_trial(_trial(5, TrialState.PRUNED, None, 1))  # its intermediate 20 dB must not make it the best
    study.add_trial(create_trial(state=TrialState.FAIL, params={}, distributions={}))
    return results


def _args(results: Path, *extra: str) -> list[str]:
    return ["--study", "smoke", "--results", str(results), "--images", "12", "--eval-images", "4", *extra]


def test_retrains_best_complete_trial_logs_registers_and_evaluates(search_results, capsys):
    args = [*_args(search_results, "--epochs", "2"), "--images", "100"]
    rc = retrain_best.main([*args, "--json", str(search_results / "r.json")])
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "trial 1 of study smoke" in out
    assert "100 training images asked for, 26 available: training on all 26" in out
    summary = json.loads((search_results / "r.json").read_text())
    assert summary["source_trial"] == 1
    model_path = search_results / "best" / "smoke" / "model.pt"
    ckpt = load_checkpoint(model_path)
    assert ckpt["config"]["model.width"] == 6 and ckpt["config"]["train.epochs"] == 2
    assert ckpt["config"]["data.image_size"] == 64  # the study's full-budget size
    assert [h["epoch"] for h in ckpt["history"]] == [1, 2]
    assert set(summary["results"]) >= {"model", "mean fill", "pyramid pre-fill", "OpenCV Telea",
                                       "OpenCV Navier-Stokes", "biharmonic"}

    client = MlflowClient(f"sqlite:///{search_results / 'mlflow.db'}")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["study"] == "smoke" and run.data.tags["source_trial"] == "1"
    assert run.data.params["model.width"] == "6"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/psnr_hole")] == [1, 2]
    assert "test/model/psnr_hole" in run.data.metrics and "test/opencv_telea/ssim_hole" in run.data.metrics
    (version,) = client.search_model_versions("name = 'smoke-best'")
    assert version.run_id == run.info.run_id
    mlflow.set_tracking_uri(f"sqlite:///{search_results / 'mlflow.db'}")
    loaded = mlflow.pytorch.load_model(f"models:/smoke-best/{version.version}")
    x = torch.rand(1, 4, 64, 64)
    assert loaded(x).shape == (1, 3, 64, 64)

    # Re-running a finished retrain does nothing; another length is refused unless --fresh.
    assert retrain_best.main(args) == 0
    assert "already done" in capsys.readouterr().out
    assert retrain_best.main([*args, "--epochs", "3"]) == 2
    assert "--fresh" in capsys.readouterr().err


def test_trial_choice_and_missing_search_are_clear_errors(search_results, tmp_path, capsys):
    assert retrain_best.main(_args(tmp_path / "nowhere")) == 2
    assert "run python -m search.run --study smoke first" in capsys.readouterr().err
    assert retrain_best.main(_args(search_results, "--trial", "9")) == 2
    assert "has no trial 9" in capsys.readouterr().err
    assert retrain_best.main(_args(search_results, "--trial", "3")) == 2  # the failed one: no parameters
    assert "no parameters" in capsys.readouterr().err
    assert retrain_best.main(_args(search_results, "--data", str(tmp_path / "missing"))) == 2
    assert "is not a folder" in capsys.readouterr().err


def final_run_id(folder: Path) -> str:
    return load_checkpoint(folder / "checkpoint.pt")["mlflow_run_id"]


def test_sigkilled_retrain_resumes_in_the_same_run(search_results):
    cmd = [sys.executable, "-m", "search.retrain_best", *_args(search_results, "--epochs", "30", "--trial", "0",
                                                               "--no-register")]
    ckpt_path = search_results / "best" / "smoke" / "checkpoint.pt"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if ckpt_path.exists() and load_checkpoint(ckpt_path)["epoch"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt_path.exists(), "no checkpoint within 10 minutes: " + proc.stdout.read().decode()[-2000:]
    killed_at = load_checkpoint(ckpt_path)
    assert 2 <= killed_at["epoch"] < 30, "the retrain finished before it could be killed"

    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"resuming after epoch {killed_at['epoch']}" in done.stdout
    final = load_checkpoint(search_results / "best" / "smoke" / "model.pt")
    history = final["history"]
    assert [h["epoch"] for h in history] == list(range(1, 31))
    assert history[: killed_at["epoch"]] == killed_at["history"]  # the first epochs are the killed run's own
    # The same retrain without the kill ends with the very same weights: resume restored optimizer, schedule, RNG.
    straight = subprocess.run([*cmd, "--out", str(search_results / "straight")], cwd=ROOT, capture_output=True,
                              text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr
    reference = load_checkpoint(search_results / "straight" / "model.pt")
    for name, tensor in reference["model"].items():
        assert torch.equal(tensor, final["model"][name]), name
    client = MlflowClient(f"sqlite:///{search_results / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], "tags.source_trial = '0'")
    (run,) = [r for r in runs if r.info.run_id == final_run_id(search_results / "best" / "smoke")]
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == list(range(1, 31))
