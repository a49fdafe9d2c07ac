"""The MLflow run of `search.evaluate`: one run per evaluation in experiment `evaluate`, metrics and artifacts."""

from __future__ import annotations

from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from search.core.evaluation import metrics_of
from search.tracking.runs import now_ms


def log_evaluation(uri: str, summary: dict) -> str:
    """Log one evaluation (`search.core.evaluation.compare`'s summary plus `model`); returns the run id."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("evaluate")
    exp_id = exp.experiment_id if exp else client.create_experiment("evaluate")
    run = client.create_run(exp_id, run_name=f"evaluate {Path(summary['model']).name}",
                            tags={"model": summary["model"], "data": summary["data"]})
    client.log_batch(run.info.run_id, metrics=[Metric(k, v, now_ms(), 0) for k, v in metrics_of(summary).items()])
    client.log_artifact(run.info.run_id, summary["comparison"])
    client.log_artifact(run.info.run_id, summary["table"])
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
