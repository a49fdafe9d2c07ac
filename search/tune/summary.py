"""End-of-run report read from the Optuna storage (the truth): a table, the best full-budget trial, dashboards."""

from __future__ import annotations

import math
import re
from typing import Any

import optuna
from optuna.trial import TrialState

from search.tune.storage import open_storage


def summarise(storage: str, study_name: str, mode: str) -> dict[str, Any]:
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    trials = []
    for t in study.get_trials(deepcopy=False):
        trials.append({
            "number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
            "epochs": len(t.intermediate_values), "fail_reason": t.user_attrs.get("fail_reason", ""),
            "ray_trial_id": t.user_attrs.get("ray_trial_id", ""), "checkpoint": t.user_attrs.get("checkpoint", ""),
            "node_id": t.user_attrs.get("node_id", ""), "placements": t.user_attrs.get("placements", []),
        })
    complete = [t for t in trials if t["state"] == TrialState.COMPLETE.name and t["value"] is not None]
    best = (max if mode == "max" else min)(complete, key=lambda t: t["value"]) if complete else None
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    return {"study": study_name, "trials": trials, "counts": counts, "best": best,
            "user_attrs": dict(study.user_attrs)}


def failures(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """FAIL trials grouped by reason (numbers in a reason, such as a step or a loss, do not split a group),
    the largest group first: [{"reason": first reason seen, "trials": [numbers]}]."""
    groups: dict[str, dict[str, Any]] = {}
    for t in summary["trials"]:
        if t["state"] == TrialState.FAIL.name:
            reason = t["fail_reason"] or "no reason recorded"
            key = re.sub(r"\d+(\.\d+)?(e-?\d+)?", "N", reason)
            groups.setdefault(key, {"reason": reason, "trials": []})["trials"].append(t["number"])
    return sorted(groups.values(), key=lambda g: -len(g["trials"]))


def short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def table(summary: dict[str, Any], objective: str, keys: list[str]) -> str:
    """A plain-text table: number, state, objective, epochs, key params (and the failure reason)."""
    header = ["#", "state", objective, "epochs", *[k.split(".", 1)[1] for k in keys]]
    rows = []
    for t in summary["trials"]:
        value = t["value"]
        shown = "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
        row = [str(t["number"]), t["state"], shown, str(t["epochs"]), *[short(t["params"].get(k, "")) for k in keys]]
        if t["fail_reason"]:
            row.append(t["fail_reason"][:80])
        rows.append(row)
    widths = [max(len(r[i]) if i < len(r) else 0 for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + (
            "  " + r[-1] if len(r) > len(header) else ""))
    return "\n".join(lines)


def dashboard_commands(storage: str, tracking_uri: str, experiment_id: str | None = None) -> list[str]:
    mlflow_cmd = f"mlflow ui --backend-store-uri {tracking_uri}"
    if experiment_id is not None:
        mlflow_cmd += f"   # then open #/experiments/{experiment_id}/runs"
    return [mlflow_cmd, f"optuna-dashboard {storage}"]
