"""MLflow: one experiment per study, a parent run per `search.run`, a child run per trial, statuses from the driver.

Trials log through MlflowClient (no thread-local active run), find-or-create their run by tag so a resumed trial
continues its own run, and never set their own end status: code after Tune's last report may never run, so a
driver-side callback (`search.tune.callbacks.MlflowStatus`) ends each run as FINISHED, KILLED (pruned) or FAILED.
No Ray here.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy.exc
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from PIL import Image

from search.core.layout import StoreError, first_line

PARENT_TAG = "inpaint.role"


@dataclass(frozen=True)
class Tracking:
    """What a trial needs to log into the right place."""

    uri: str
    experiment_id: str
    parent_run_id: str
    study: str


def is_local(uri: str) -> bool:
    """A tracking store that is a file on this machine (not a server every node can reach)."""
    return uri.startswith(("sqlite:", "file:", "/"))


def check_store(uri: str) -> None:
    """Open the tracking store once (a quick, non-retried request for a server) or raise a StoreError naming it."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # "creating database tables" is not news; errors still are
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except (MlflowException, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise StoreError(f"cannot open the MLflow tracking store {uri} ({first_line(exc)}); check that the path "
                         "exists and is writable (sqlite:////abs/path.db), or that the tracking server answers at "
                         "that address") from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start(
    uri: str, study: str, artifact_root: Path | None, run_name: str, tags: dict[str, str], shared: dict | None = None,
) -> Tracking:
    """Create (or reuse) the study's experiment and start a parent run for this invocation (params: `shared`)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(study)
    if exp is None:
        # Fixed at creation: a local store needs an absolute artifact root, or trials would write into their
        # throwaway folders; a tracking server chooses its own (trials on other nodes must reach it).
        location = artifact_root.resolve().as_uri() if artifact_root and is_local(uri) else None
        exp_id = client.create_experiment(study, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    run = client.create_run(exp_id, run_name=run_name, tags={PARENT_TAG: "search", "study": study, **tags})
    if shared:
        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in sorted(shared.items())])
    return Tracking(uri, exp_id, run.info.run_id, study)


def find_parent(uri: str, study: str, parent_run_id: str) -> Tracking:
    """The parent run of a search being resumed; an error says what is missing from the store."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(study)
    if exp is None:
        raise ValueError(f"the MLflow store {uri} has no experiment {study!r}, which the search being resumed logged "
                         "into: give --tracking-uri of that search")
    return Tracking(uri, exp.experiment_id, parent_run_id, study)


def reopen(tr: Tracking) -> None:
    """A resumed search continues under its original parent run."""
    MlflowClient(tr.uri).update_run(tr.parent_run_id, status="RUNNING")


def _trial_filter(tr: Tracking, number: int) -> str:
    # Keyed by the Optuna trial number: after a crash Ray may re-run an Optuna trial under a new Ray trial id.
    return f"tags.optuna_trial = '{number}' and tags.`mlflow.parentRunId` = '{tr.parent_run_id}'"


def child_run(tr: Tracking, ray_trial_id: str, number: int, params: dict, config: dict) -> str:
    """The run of this trial: found again after a resume, created otherwise.

    Its params are exactly the Optuna trial's (same keys); the full flat config goes along as config.json, and
    the values shared by every trial are the parent run's params.
    """
    client = MlflowClient(tr.uri)
    found = client.search_runs([tr.experiment_id], _trial_filter(tr, number))
    if found:
        client.set_tag(found[0].info.run_id, "ray_trial_id", ray_trial_id)
        return found[0].info.run_id
    tags = {"mlflow.parentRunId": tr.parent_run_id, "ray_trial_id": ray_trial_id, "optuna_trial": str(number),
            "study": tr.study}
    run = client.create_run(tr.experiment_id, run_name=f"trial {number}", tags=tags)
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())],
                     tags=[RunTag("mlflow.note.content", f"Optuna trial {number} of study {tr.study}")])
    client.log_dict(run.info.run_id, config, "config.json")
    return run.info.run_id


def last_logged_epoch(tr: Tracking, run_id: str) -> int:
    """The last epoch this run already has metrics for (0 for none): a trial restarted from an earlier checkpoint
    trains those epochs again and must not log them twice."""
    return max((m.step for m in MlflowClient(tr.uri).get_metric_history(run_id, "train/loss")), default=0)


def set_tags(tr: Tracking, run_id: str, tags: dict) -> None:
    MlflowClient(tr.uri).log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def now_ms() -> int:
    return int(time.time() * 1000)


def epoch_metrics(metrics: dict[str, float], step: int) -> list[Metric]:
    """One epoch's report as MLflow metrics at `step` (the epoch and step counters are the step, not metrics)."""
    now = now_ms()
    return [Metric(k, float(v), timestamp=now, step=step) for k, v in metrics.items() if k not in ("epoch", "step")]


def log_epoch(tr: Tracking, run_id: str, metrics: dict[str, float], step: int) -> None:
    MlflowClient(tr.uri).log_batch(run_id, metrics=epoch_metrics(metrics, step))


def log_image(tr: Tracking, run_id: str, image: Image.Image, name: str) -> None:
    client = MlflowClient(tr.uri)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        image.save(path)
        client.log_artifact(run_id, str(path), artifact_path="samples")


def set_status(tr: Tracking, number: int, status: str) -> None:
    client = MlflowClient(tr.uri)
    for run in client.search_runs([tr.experiment_id], _trial_filter(tr, number)):
        client.set_terminated(run.info.run_id, status)


def close_parent(tr: Tracking, status: str = "FINISHED") -> int:
    """End the parent run; child runs still RUNNING (trials lost in a crash) are marked FAILED. Returns how many."""
    client = MlflowClient(tr.uri)
    orphans = client.search_runs(
        [tr.experiment_id], f"tags.`mlflow.parentRunId` = '{tr.parent_run_id}' and attributes.status = 'RUNNING'")
    for run in orphans:
        client.set_terminated(run.info.run_id, "FAILED")
    client.set_terminated(tr.parent_run_id, status)
    return len(orphans)
