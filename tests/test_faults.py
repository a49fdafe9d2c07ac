"""The search's driver SIGKILLed at each moment that matters (search.core.faults), then `--resume`: the stores end
exactly as an uninterrupted search leaves them. Real processes, real Ray, Optuna and MLflow stores."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from servers import free_port

from search import run
from search.core.checkpoint import load_checkpoint
from search.core.faults import POINTS

pytestmark = pytest.mark.slow

STUDY = '''
"""Test study: two trials at a time, ASHA, long enough to be interrupted anywhere."""
from search.tune.study import Asha, Budget, Study

def space(trial):
    trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)

STUDY = Study(
    name="faults", description="", space=space, asha=Asha(grace=1, reduction=2),
    fixed={"model.depth": 2, "model.width": 8, "train.batch_size": 4, "loss.w_perceptual": 0.0,
           "train.precision": "fp32", "data.workers": 1},
    budget=Budget(trials=5, epochs=3, train_images=8, val_images=4, image_size=64, steps_per_epoch=8,
                  max_concurrent=2, val_fraction=0.2, test_fraction=0.2),
)
'''
# Which time a process reaches the point: late enough that trials have records, checkpoints and runs to lose.
NTH = {"trial_created": 3, "mid_epoch": 12, "checkpoint_write": 2, "mlflow_logging": 2, "optuna_recorded": 4,
       "summary": 1}


def _killed_at(fault: str, study_file: Path, results: Path, log: Path) -> None:
    """Run the search with INPAINT_FAULT=fault; it must end SIGKILLed. What the dead driver leaves (its private
    Ray cluster, in its process group) is killed too, as on a machine that rebooted."""
    cmd = [sys.executable, "-m", "search.run", "--study", str(study_file), "--results", str(results)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "INPAINT_FAULT": fault},
                                start_new_session=True)
    try:
        rc = proc.wait(timeout=400)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert rc == -signal.SIGKILL, f"the driver was not killed at {fault}:\n{log.read_text()[-2000:]}"


@pytest.mark.parametrize("point", POINTS)
def test_driver_killed_then_resumed_loses_and_duplicates_nothing(tmp_path, point):
    study_file = tmp_path / "faults.py"
    study_file.write_text(STUDY)
    results = tmp_path / "results"
    _killed_at(f"{point}:{NTH[point]}", study_file, results, tmp_path / "killed.log")
    assert run.main(["--study", str(study_file), "--results", str(results), "--resume"]) == 0
    trials = optuna.load_study(study_name="faults", storage=f"sqlite:///{results / 'optuna.db'}").get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    for t in trials:
        assert sorted(t.intermediate_values) == list(range(1, len(t.intermediate_values) + 1))
        assert len(t.intermediate_values) == 3 or t.state == TrialState.PRUNED

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(int(r.data.tags["optuna_trial"]) for r in children) == [0, 1, 2, 3, 4]
    by_number = {int(r.data.tags["optuna_trial"]): r for r in children}
    for t in trials:
        r = by_number[t.number]
        assert r.info.status == ("FINISHED" if t.state == TrialState.COMPLETE else "KILLED"), (t.number, point)
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val/psnr_hole")]
        assert steps == sorted(set(steps)), (t.number, steps)  # each epoch logged once, even when trained twice
        # MLflow holds every epoch Optuna holds; at most one more, trained while the driver was dying (a trial
        # runs on while the driver decides on its last report, and the driver never heard of that epoch).
        recorded = sorted(t.intermediate_values)
        assert steps[: len(recorded)] == recorded and len(steps) - len(recorded) <= 1, (t.number, steps)

    kept = list((results / "ray" / "faults").glob("*/checkpoint_*/checkpoint.pt"))
    for path in kept:
        load_checkpoint(path, required=("model", "epoch", "history"))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert {Path(t.user_attrs["checkpoint"]) / "checkpoint.pt" for t in complete} <= set(kept)


WORKERS_STUDY = '''
"""Test study: a trial far too large for any machine beside normal ones."""
from search.tune.study import Budget, Study

def space(trial):
    trial.suggest_categorical("model.width", [8, 65536])
    trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)

STUDY = Study(
    name="workers", description="", space=space, asha=None,
    fixed={"model.depth": 2, "model.max_width": 65536, "train.batch_size": 4, "loss.w_perceptual": 0.0,
           "train.precision": "fp32", "data.workers": 1},
    budget=Budget(trials=4, epochs=3, train_images=8, val_images=4, image_size=64, steps_per_epoch=4,
                  max_concurrent=2, val_fraction=0.2, test_fraction=0.2),
    warm_start=[{"model.width": w, "optim.lr": lr} for w, lr in ((8, 1e-3), (65536, 1e-3), (8, 2e-3), (8, 3e-3))],
)
'''


def test_a_killed_worker_is_retried_and_a_trial_too_large_fails_with_its_reason(tmp_path):
    """A trial's worker SIGKILLed in its second epoch: Tune restarts the trial from its checkpoint and says so. A
    configuration that needs 154 GB for one layer: FAIL, with the allocator's message. The search goes on."""
    study_file = tmp_path / "workers.py"
    study_file.write_text(WORKERS_STUDY)
    results = tmp_path / "results"
    env = {**os.environ, "INPAINT_FAULT": "mid_epoch:6:self", "INPAINT_FAULT_ONCE": str(tmp_path / "died")}
    done = subprocess.run([sys.executable, "-m", "search.run", "--study", str(study_file), "--results", str(results)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "died").exists()  # a worker did die
    trials = optuna.load_study(study_name="workers", storage=f"sqlite:///{results / 'optuna.db'}").get_trials()
    assert len(trials) == 4
    huge = [t for t in trials if t.params["model.width"] == 65536]
    assert [t.state for t in huge] == [TrialState.FAIL]
    assert "can't allocate memory" in huge[0].user_attrs["fail_reason"]
    normal = [t for t in trials if t.params["model.width"] == 8]
    assert all(t.state == TrialState.COMPLETE and sorted(t.intermediate_values) == [1, 2, 3] for t in normal)
    [moved] = [t for t in normal if len(t.user_attrs["placements"]) > 1]
    assert moved.user_attrs["placements"][-1]["start_epoch"] >= 1  # restarted from its checkpoint, not from 0
    assert f"trial {moved.number}: failed on node" in done.stdout and "retrying from its last checkpoint" in done.stdout
    assert f"trial {huge[0].number}: FAIL" in done.stdout
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("workers").experiment_id])
    status = {int(r.data.tags["optuna_trial"]): r.info.status for r in runs if "optuna_trial" in r.data.tags}
    assert status == {t.number: "FAILED" if t in huge else "FINISHED" for t in trials}


def test_a_truncated_checkpoint_found_on_resume_restarts_its_trial_with_a_warning(tmp_path):
    study_file = tmp_path / "faults.py"
    study_file.write_text(STUDY.replace("steps_per_epoch=8", "steps_per_epoch=16"))
    results = tmp_path / "results"
    _killed_at("optuna_recorded:3", study_file, results, tmp_path / "killed.log")
    storage = f"sqlite:///{results / 'optuna.db'}"
    running = [t for t in optuna.load_study(study_name="faults", storage=storage).get_trials()
               if t.state == TrialState.RUNNING and t.intermediate_values]
    assert running, "no trial was interrupted after an epoch"
    cut = []
    for t in running:  # every checkpoint of the interrupted trials loses its second half
        for path in (results / "ray" / "faults").glob(f"trial_{t.number:04d}_*/checkpoint_*/checkpoint.pt"):
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
            cut.append(t.number)
    assert cut
    assert run.main(["--study", str(study_file), "--results", str(results), "--resume"]) == 0
    trials = optuna.load_study(study_name="faults", storage=storage).get_trials()
    assert len(trials) == 5 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    warned = {int(r.data.tags["optuna_trial"]): r.data.tags.get("inpaint.warning", "") for r in runs
              if "optuna_trial" in r.data.tags}
    for number in cut:
        assert "could not be used" in warned[number] and "started over" in warned[number], warned
        assert trials[number].user_attrs["placements"][-1]["start_epoch"] == 0
    assert not any(warned[n] for n in warned if n not in cut)


def _get(url: str, body: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0  # not up yet


def test_dashboards_reading_the_stores_while_the_search_writes_never_lock_it(tmp_path):
    """optuna-dashboard and the MLflow UI open on the search's SQLite files (started first, as a user watching a
    search would) and read them four times a second throughout the search: no "database is locked" anywhere."""
    study_file = tmp_path / "faults.py"
    study_file.write_text(STUDY.replace("steps_per_epoch=8", "steps_per_epoch=16"))
    results = tmp_path / "results"
    results.mkdir()
    # optuna-dashboard 0.21 cannot start on an empty file (it reads a table it has not created): make the tables.
    optuna.storages.RDBStorage(f"sqlite:///{results / 'optuna.db'}").engine.dispose()
    bin_dir = Path(sys.executable).parent
    ports = {"optuna": free_port(), "mlflow": free_port()}
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
             for cmd in ([str(bin_dir / "optuna-dashboard"), f"sqlite:///{results / 'optuna.db'}", "--host",
                          "127.0.0.1", "--port", str(ports["optuna"]), "--quiet"],
                         [str(bin_dir / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{results / 'mlflow.db'}",
                          "--host", "127.0.0.1", "--port", str(ports["mlflow"]), "--workers", "1"])]
    optuna_api = f"http://127.0.0.1:{ports['optuna']}/api/studies"
    mlflow_api = f"http://127.0.0.1:{ports['mlflow']}/ajax-api/2.0/mlflow/runs/search"
    default = json.dumps({"experiment_ids": ["0"], "max_results": 100}).encode()  # exists in a fresh store
    study = json.dumps({"experiment_ids": ["1"], "max_results": 100}).encode()  # the search's, once it made it
    try:
        deadline = time.monotonic() + 120
        while _get(optuna_api) != 200 or _get(mlflow_api, default) != 200:
            assert time.monotonic() < deadline, "the dashboards did not come up"
            time.sleep(0.5)
        search = subprocess.Popen([sys.executable, "-m", "search.run", "--study", str(study_file), "--results",
                                   str(results)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        procs.append(search)
        answered = 0
        while search.poll() is None:  # both stores read throughout the search, the trials' runs too
            statuses = (_get(optuna_api), _get(mlflow_api, default), _get(mlflow_api, study))
            assert statuses[:2] == (200, 200) and statuses[2] in (200, 400, 404), f"the dashboards answered {statuses}"
            answered += statuses[2] == 200
            time.sleep(0.25)
        out = search.stdout.read().decode(errors="replace")
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    logs = "".join(p.stdout.read().decode(errors="replace") for p in procs[:2])
    assert search.returncode == 0, out[-3000:]
    assert answered >= 20, answered
    assert "database is locked" not in out + logs
    trials = optuna.load_study(study_name="faults", storage=f"sqlite:///{results / 'optuna.db'}").get_trials()
    assert len(trials) == 5 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)


def _listening(group: int) -> dict[str, list[str]]:
    """Local address -> command names, for every listening TCP socket of the processes in that process group."""
    owners: dict[str, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != group:
                continue
            name = (proc / "comm").read_text().strip()
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    owners[link[8:-1]] = name
        except OSError:
            continue
    found: dict[str, list[str]] = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in owners:  # 0A: LISTEN
                continue
            address = local.split(":")[0]
            raw = bytes.fromhex(address)
            # /proc writes each 32-bit word in host (little-endian) order
            ip = b"".join(raw[i: i + 4][::-1] for i in range(0, len(raw), 4))
            text = ".".join(map(str, ip)) if width == 8 else ip.hex()
            found.setdefault(text, []).append(owners[inode])
    return found


LOOPBACK = {"127.0.0.1", "0" * 20 + "ffff7f000001", "0" * 31 + "1"}  # IPv4, IPv4-mapped IPv6, ::1


def test_the_private_ray_cluster_of_a_search_listens_on_loopback_only(tmp_path):
    study_file = tmp_path / "faults.py"
    study_file.write_text(STUDY.replace("steps_per_epoch=8", "steps_per_epoch=16"))
    results = tmp_path / "results"
    search = subprocess.Popen([sys.executable, "-m", "search.run", "--study", str(study_file), "--results",
                               str(results)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:  # once trials run, every kind of Ray process is up: GCS, raylet, agents, workers
            assert time.monotonic() < deadline and search.poll() is None, "no trial ever ran"
            try:
                trials = optuna.load_study(study_name="faults", storage=f"sqlite:///{results / 'optuna.db'}")
                if any(t.intermediate_values for t in trials.get_trials(deepcopy=False)):
                    break
            except (KeyError, Exception):  # noqa: BLE001  (the study does not exist yet)
                pass
            time.sleep(0.5)
        sockets = _listening(search.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(search.pid, signal.SIGKILL)
    owners = {name for names in sockets.values() for name in names}
    assert {"gcs_server", "raylet"} <= owners, sockets  # the cluster's processes were found
    exposed = {address: names for address, names in sockets.items() if address not in LOOPBACK}
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_three_searches_and_a_retrain_share_one_results_folder_without_cross_talk(tmp_path):
    """A short soak: three studies searched one after the other in one results folder, `retrain_best` of the first
    running beside the third. Each study keeps its own Optuna trials, MLflow experiment and runs, state file and
    checkpoints; nothing is locked out, nothing lands in another study."""
    results = tmp_path / "results"
    files = {}
    for name, trials in (("soak_a", 3), ("soak_b", 2), ("soak_c", 4)):
        files[name] = tmp_path / f"{name}.py"
        files[name].write_text(STUDY.replace('name="faults"', f'name="{name}"').replace("trials=5", f"trials={trials}"))
    for name in ("soak_a", "soak_b"):
        assert run.main(["--study", str(files[name]), "--results", str(results)]) == 0
    third = subprocess.Popen([sys.executable, "-m", "search.run", "--study", str(files["soak_c"]), "--results",
                              str(results)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        retrain = subprocess.run([sys.executable, "-m", "search.retrain_best", "--study", str(files["soak_a"]),
                                  "--results", str(results), "--images", "12", "--epochs", "2", "--eval-images", "4"],
                                 capture_output=True, text=True, timeout=600)
        out = third.communicate(timeout=600)[0].decode(errors="replace")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(third.pid, signal.SIGKILL)
    assert retrain.returncode == 0, retrain.stdout[-2000:] + retrain.stderr[-2000:]
    assert third.returncode == 0, out[-3000:]
    assert "database is locked" not in out + retrain.stdout + retrain.stderr

    storage = f"sqlite:///{results / 'optuna.db'}"
    assert sorted(s.study_name for s in optuna.get_all_study_summaries(storage)) == ["soak_a", "soak_b", "soak_c"]
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    for name, count in (("soak_a", 3), ("soak_b", 2), ("soak_c", 4)):
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
        assert len(trials) == count and all(t.state.is_finished() for t in trials)
        state = json.loads((results / "runs" / f"{name}.json").read_text())
        exp = client.get_experiment_by_name(name)
        runs = client.search_runs([exp.experiment_id])
        parents = [r for r in runs if r.data.tags.get("inpaint.role") == "search"]
        assert [p.info.run_id for p in parents] == [state["parent_run_id"]]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert sorted(int(r.data.tags["optuna_trial"]) for r in children) == list(range(count))
        assert all(r.data.tags["mlflow.parentRunId"] == state["parent_run_id"] for r in children)
        assert all(r.data.tags["study"] == name for r in runs)
        assert not [r for r in runs if r.info.status == "RUNNING"]
        # Each study's checkpoints under its own folder, for its own trials only.
        kept = {p.parent.parent.name.split("_")[1] for p in (results / "ray" / name).glob("*/checkpoint_*/*.pt")}
        assert kept == {f"{t.number:04d}" for t in trials if t.state == TrialState.COMPLETE}
    retrained = [r for r in client.search_runs([client.get_experiment_by_name("soak_a").experiment_id])
                 if r.data.tags.get("source_trial") is not None]
    assert len(retrained) == 1 and retrained[0].info.status == "FINISHED"
    best_a = optuna.load_study(study_name="soak_a", storage=storage).best_trial
    assert retrained[0].data.tags["source_trial"] == str(best_a.number)
    assert (results / "best" / "soak_a" / "model.pt").exists() and not (results / "best" / "soak_c").exists()
