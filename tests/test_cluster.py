"""Beyond one machine, with real servers: Optuna on PostgreSQL, MLflow through a tracking server, a three-node Ray
cluster that loses a node mid-trial, and GPU scheduling on logical GPUs. Servers come from tests/servers.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from search import retrain_best, run
from search.core.checkpoint import TRIAL_FILE, load_model
from search.tracking.registry import model_name

pytestmark = pytest.mark.slow

STUDY = '''
"""Test study: {name}, a few seconds per epoch, every trial to the full budget."""
from search.tune.study import Budget, Study

def space(trial):
    trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)

STUDY = Study(
    name="{name}", description="", space=space, asha=None,
    fixed={{"model.depth": 2, "model.width": 8, "train.batch_size": 4, "loss.w_perceptual": 0.0,
           "train.precision": "fp32", "data.workers": 1}},
    budget=Budget(trials={trials}, epochs={epochs}, train_images=8, val_images=4, image_size=64,
                  steps_per_epoch={steps}, val_fraction=0.2, test_fraction=0.2),
)
'''


def _study_file(tmp_path: Path, name: str, trials: int, epochs: int, steps: int) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(STUDY.format(name=name, trials=trials, epochs=epochs, steps=steps))
    return path


def _children(client: MlflowClient, study: str) -> tuple[list, list]:
    exp = client.get_experiment_by_name(study)
    runs = client.search_runs([exp.experiment_id])
    return ([r for r in runs if "mlflow.parentRunId" not in r.data.tags],
            [r for r in runs if "mlflow.parentRunId" in r.data.tags])


def test_search_on_postgres_and_an_mlflow_server_then_retrain_best(tmp_path, postgres_url, mlflow_server, capsys):
    storage = postgres_url("pgsearch")
    results = tmp_path / "results"
    args = ["--study", "smoke", "--results", str(results), "--storage", storage,
            "--tracking-uri", mlflow_server.url]
    assert run.main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"optuna-dashboard {storage}" in out and "its final weights: " in out
    trials = optuna.load_study(study_name="smoke", storage=storage).get_trials(deepcopy=False)
    assert len(trials) == 4 and not (results / "optuna.db").exists()
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete and all(len(t.intermediate_values) == 3 for t in complete)

    # Everything the trials logged went through the server: nothing local, every run, metric and sample image there.
    assert not (results / "mlflow.db").exists() and not (results / "mlartifacts").exists()
    client = MlflowClient(mlflow_server.url)
    parents, children = _children(client, "smoke")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(int(r.data.tags["optuna_trial"]) for r in children) == [t.number for t in trials]
    by_number = {int(r.data.tags["optuna_trial"]): r for r in children}
    for t in trials:
        r = by_number[t.number]
        assert r.info.status == ("FINISHED" if t.state == TrialState.COMPLETE else "KILLED")
        history = client.get_metric_history(r.info.run_id, "val/psnr_hole")
        assert [m.step for m in history] == sorted(t.intermediate_values)
        samples = [a.path for a in client.list_artifacts(r.info.run_id, "samples")]
        assert len(samples) == len(t.intermediate_values)
        assert r.info.artifact_uri.startswith("mlflow-artifacts:")  # served by the server, not a driver path
        assert r.data.tags["node_id"] == t.user_attrs["node_id"]
    stored = list(mlflow_server.artifacts.rglob("epoch_001.png"))
    assert len(stored) == len(trials)

    # The full-budget trials keep their final weights in the run's storage; the others keep nothing.
    for t in trials:
        kept = list((results / "ray" / "smoke").glob(f"*/checkpoint_*/{TRIAL_FILE}"))
        if t.state == TrialState.COMPLETE:
            assert Path(t.user_attrs["checkpoint"]) / TRIAL_FILE in kept
            model, cfg = load_model(t.user_attrs["checkpoint"])  # the folder, as the summary prints it
            assert cfg.train.epochs == 3
    assert len(kept) == len(complete)

    # retrain_best finds the search (its state file names both servers) and registers its model on the server.
    rc = retrain_best.main(["--study", "smoke", "--results", str(results), "--images", "8", "--epochs", "1",
                            "--eval-images", "4"])
    assert rc == 0, capsys.readouterr().err
    best = max(complete, key=lambda t: t.value)
    assert f"trial {best.number} of study smoke" in capsys.readouterr().out
    versions = client.search_model_versions(f"name = '{model_name('smoke')}'")
    assert len(versions) == 1
    retrain = client.get_run(versions[0].run_id)
    assert retrain.info.status == "FINISHED" and "test/model/psnr_hole" in retrain.data.metrics
    assert [a.path for a in client.list_artifacts(retrain.info.run_id, "checkpoint")] == ["checkpoint/model.pt"]


def _wait_for_trial_on(storage: str, study: str, nodes: set[str], deadline: float) -> optuna.trial.FrozenTrial:
    """A RUNNING trial on one of `nodes` that has reported at least one epoch and has more to go."""
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
        except (KeyError, sqlalchemy.exc.SQLAlchemyError):
            continue
        for t in trials:
            # Two epochs (~8 s) to go at least: the kill lands inside the trial, not after its end.
            if t.state == TrialState.RUNNING and t.user_attrs.get("node_id") in nodes and \
                    1 <= len(t.intermediate_values) <= 2:
                return t
    pytest.fail("no trial ever ran on a worker node")


def test_a_three_node_search_survives_losing_a_node_mid_trial(tmp_path, ray_cluster, mlflow_server):
    ray_cluster.add_head(cpus=1)
    head = ray_cluster.node_ids()
    ray_cluster.add_worker(cpus=1)
    ray_cluster.add_worker(cpus=1)
    workers = set(ray_cluster.node_ids()) - set(head)
    assert len(workers) == 2
    study_file = _study_file(tmp_path, "nodes", trials=5, epochs=4, steps=60)
    results = tmp_path / "results"
    storage = f"sqlite:///{results / 'optuna.db'}"
    cmd = [sys.executable, "-m", "search.run", "--study", str(study_file), "--results", str(results),
           "--address", ray_cluster.address, "--tracking-uri", mlflow_server.url]
    log = tmp_path / "search.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        victim = _wait_for_trial_on(storage, "nodes", workers, time.monotonic() + 300)
        killed_node, epochs_before = victim.user_attrs["node_id"], len(victim.intermediate_values)
        ray_cluster.kill_node(killed_node)
        rc = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    text = log.read_text(errors="replace")
    assert rc == 0, text[-3000:]
    assert "retrying" in text  # the lost trial's restart is said, not hidden

    trials = optuna.load_study(study_name="nodes", storage=storage).get_trials(deepcopy=False)
    assert len(trials) == 5 and all(t.state == TrialState.COMPLETE for t in trials)
    assert all(sorted(t.intermediate_values) == [1, 2, 3, 4] for t in trials)
    moved = trials[victim.number].user_attrs["placements"]
    assert moved[0]["node_id"] == killed_node
    assert len(moved) >= 2 and moved[-1]["node_id"] != killed_node
    assert moved[-1]["start_epoch"] >= epochs_before >= 1  # continued from its checkpoint, not from scratch
    nodes_used = {p["node_id"] for t in trials for p in t.user_attrs["placements"]}
    assert len(nodes_used) >= 2

    client = MlflowClient(mlflow_server.url)
    parents, children = _children(client, "nodes")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(int(r.data.tags["optuna_trial"]) for r in children) == list(range(5))
    assert all(r.info.status == "FINISHED" for r in children)
    victim_run = next(r for r in children if r.data.tags["optuna_trial"] == str(victim.number))
    assert victim_run.data.tags["node_id"] == moved[-1]["node_id"]
    assert [m.step for m in client.get_metric_history(victim_run.info.run_id, "val/psnr_hole")] == [1, 2, 3, 4]

    # The table for the record (shown with pytest -s): trial, state, epochs, nodes it ran on.
    short = {n: f"{'head' if n in head else 'worker'}:{n[:6]}" for n in nodes_used | {killed_node}}
    for t in trials:
        hops = " -> ".join(f"{short[p['node_id']]}@{p['start_epoch']}" for p in t.user_attrs["placements"])
        print(f"trial {t.number}: {t.state.name}, {len(t.intermediate_values)} epochs, {hops}")


def test_logical_gpus_pack_four_half_gpu_trials_with_their_gpu_ids(tmp_path, ray_cluster):
    ray_cluster.add_head(cpus=2, gpus=2)
    study_file = _study_file(tmp_path, "gpus", trials=4, epochs=2, steps=6)
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "search.run", "--study", str(study_file), "--results", str(results),
           "--address", ray_cluster.address, "--gpus-per-trial", "0.5", "--train-on-cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "4 trial(s) at once, each with 0.5 CPU and 0.5 GPU" in done.stdout
    trials = optuna.load_study(study_name="gpus", storage=f"sqlite:///{results / 'optuna.db'}").get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    # All four ran at once: some moment lies inside every trial's run.
    assert max(t.datetime_start for t in trials) < min(t.datetime_complete for t in trials)
    ids = sorted(t.user_attrs["gpu_ids"] for t in trials)
    assert ids == ["0", "0", "1", "1"]  # two trials on each logical GPU, each told which one
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    _, children = _children(client, "gpus")
    assert sorted(r.data.tags["gpu_ids"] for r in children) == ids


def test_a_cluster_refuses_a_local_mlflow_store_and_names_a_node_without_the_project(
        tmp_path, ray_cluster, mlflow_server, capsys):
    """What a cluster needs from the user, said before anything runs: a tracking server, the project on each node."""
    ray_cluster.add_head(cpus=1)
    head = ray_cluster.node_ids()
    # A node whose Python has Ray, torch and the rest but not this project: as a machine where it was never
    # installed. Its environment sees this one's packages through a path file, which skips the editable install.
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    [site] = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_relative_to(sys.prefix)]
    [bare_site] = bare.glob("lib/python*/site-packages")
    (bare_site / "packages.pth").write_text(site + "\n")
    ray_cluster.add_worker(cpus=1, python=str(bare / "bin" / "python"))
    [lacking] = set(ray_cluster.node_ids()) - set(head)
    results = tmp_path / "results"
    args = ["--study", "smoke", "--results", str(results), "--address", ray_cluster.address]

    # The default MLflow store is a local file, which two nodes cannot share: refused, with the server to start.
    assert run.main(args) == 2
    err = capsys.readouterr().err
    assert "the Ray cluster has 2 nodes" in err and "mlflow server" in err and "--serve-artifacts" in err
    assert "--tracking-uri http://" in err

    # Through a server, the node that cannot import the project is named before any trial starts. (The driver runs
    # outside the repository: Ray hands the driver's sys.path to every worker, and the repository on it would hide
    # what the node lacks.)
    done = subprocess.run([sys.executable, "-m", "search.run", *args, "--tracking-uri", mlflow_server.url],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"node {lacking[:12]}" in done.stderr and "No module named 'search'" in done.stderr
    assert f"node {head[0][:12]}" not in done.stderr
    assert not (results / "runs" / "smoke.json").exists()  # nothing to --resume: the next plain run starts afresh
