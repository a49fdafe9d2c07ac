"""MLflow side of `search.retrain_best`: its run (re-opened on resume), per-epoch metrics, the logged and
registered model, the test-split evaluation.

The run lives in the study's experiment beside the search's runs, tagged with the study and the source trial, so
the MLflow UI shows the retrain next to the trial it came from.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import torch
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

import models
from search.core.config import Config
from search.core.evaluation import metrics_of
from search.tracking.runs import PARENT_TAG, epoch_metrics, now_ms

RETRAIN_ROLE = "retrain"


def model_name(study: str) -> str:
    """The registered model's name: one per study, a new version per retrain."""
    return f"{study}-best"


def open_run(uri: str, study: str, trial: int, cfg: Config, run_id: str | None) -> str:
    """Re-open the run of a resumed retrain, or create a new one (params: the full flat config)."""
    client = MlflowClient(uri)
    if run_id:
        try:
            client.update_run(run_id, status="RUNNING")
            return run_id
        except mlflow.exceptions.MlflowException:
            pass  # the checkpoint came from another tracking store: start a run here
    exp = client.get_experiment_by_name(study)
    exp_id = exp.experiment_id if exp else client.create_experiment(study)
    tags = {PARENT_TAG: RETRAIN_ROLE, "study": study, "source_trial": str(trial),
            "mlflow.note.content": f"Retrain of Optuna trial {trial} of study {study}"}
    run = client.create_run(exp_id, run_name=f"retrain trial {trial}", tags=tags)
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in sorted(cfg.to_flat().items())])
    return run.info.run_id


def log_epoch(uri: str, run_id: str, metrics: dict[str, float]) -> None:
    MlflowClient(uri).log_batch(run_id, metrics=epoch_metrics(metrics, int(metrics["epoch"])))


def backfill(uri: str, run_id: str, history: list[dict[str, float]]) -> None:
    """Log the epochs a killed retrain checkpointed but never reached MLflow with (no duplicated points)."""
    logged = {m.step for m in MlflowClient(uri).get_metric_history(run_id, "train/loss")}
    for metrics in history:
        if int(metrics["epoch"]) not in logged:
            log_epoch(uri, run_id, metrics)


def is_finished(uri: str, run_id: str) -> bool:
    try:
        return MlflowClient(uri).get_run(run_id).info.status == "FINISHED"
    except mlflow.exceptions.MlflowException:
        return False


def close_run(uri: str, run_id: str, status: str) -> None:
    MlflowClient(uri).set_terminated(run_id, status)


def finish_run(uri: str, run_id: str, model: torch.nn.Module, comparison: dict, checkpoint: Path,
               register: bool) -> None:
    """Evaluation metrics and artifacts, the model as an MLflow model (registered unless told not to), FINISHED."""
    client = MlflowClient(uri)
    client.log_batch(run_id, metrics=[Metric(k, v, now_ms(), 0) for k, v in metrics_of(comparison).items()])
    client.log_artifact(run_id, comparison["comparison"], "evaluation")
    client.log_artifact(run_id, comparison["table"], "evaluation")
    client.log_artifact(run_id, str(checkpoint), "checkpoint")
    study = client.get_run(run_id).data.tags.get("study", "model")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    # Its warning about pickle is the known trade-off (pt2 cannot trace the pre-fill); said in the README.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    # Requirements given, not inferred: inference imports the model in a subprocess and can take minutes.
    requirements = [f"torch=={torch.__version__.split('+')[0]}"]
    name = model_name(study) if register else None
    if name and client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
        name = None  # registered before an interruption: one version per retrain
        print(f"retrain_best: this run's model is already registered as {model_name(study)!r}")
    try:
        with mlflow.start_run(run_id=run_id):
            # Pickle, not MLflow's default pt2 export: the pre-fill loops a data-dependent number of levels.
            # code_paths: the pickled UNet refers to the `models` package, shipped with the model.
            mlflow.pytorch.log_model(model.cpu().eval(), name="model", pip_requirements=requirements,
                                     serialization_format="pickle", code_paths=[str(Path(models.__file__).parent)],
                                     registered_model_name=name)
    except mlflow.exceptions.MlflowException as exc:
        client.set_terminated(run_id, "FAILED")
        raise RuntimeError(f"the model is saved in {checkpoint}, but logging it to MLflow failed: {exc}") from None
    finally:
        mlflow.set_tracking_uri(previous)
    client.set_terminated(run_id, "FINISHED")
    where = f"registered as {model_name(study)!r}, " if register else ""
    print(f"retrain_best: MLflow run {run_id} ({where}tracking {uri})")
