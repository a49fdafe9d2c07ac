"""Resources per trial, from the cluster's nodes: a trial runs on one node, so what fits is counted node by node.

CPUs per trial come from the nodes that hold the GPUs (a CPU-only head node must not skew them), and fractional
GPUs per trial (0.5, 0.25) pack several trials on one GPU. On a cluster, every node is checked at start for what
a trial imports, so a node that lacks the project fails the start with its name instead of every trial on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_EPS = 1e-9  # 1 / 0.1 is 9.999999999999998 in floats: count 10


@dataclass(frozen=True)
class Node:
    node_id: str
    cpus: float
    gpus: float
    address: str = ""  # the node's IP, for messages


@dataclass(frozen=True)
class Fit:
    cpu: float  # CPUs per trial (fractional below 1)
    gpu: float  # GPUs per trial (fractional allowed)
    slots: int  # trials that fit at once on the whole cluster
    per_node: dict[str, int]  # node id -> trials that fit there


def alive_nodes() -> list[Node]:
    """The cluster's live nodes and their declared CPUs / GPUs (Ray must be initialised)."""
    import ray

    return [Node(n["NodeID"], float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)),
                 n.get("NodeManagerAddress", "")) for n in ray.nodes() if n.get("Alive")]


def _probe() -> str:
    """Runs on one node: imports what a trial imports and reads the shipped VGG16 tensors."""
    import search.tune.trainable  # noqa: F401  (the project, torch, Ray Tune, MLflow)
    from losses.vgg_weights import SHIPPED_WEIGHTS

    if not SHIPPED_WEIGHTS.is_file():
        raise FileNotFoundError(f"the shipped VGG16 tensors are missing: {SHIPPED_WEIGHTS}")
    return "ok"


def check_every_node(nodes: list[Node], timeout_s: float = 300.0) -> None:
    """Run `_probe` on every node (no CPU held, pinned to the node); a RuntimeError names the nodes that fail."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    refs = {n.node_id: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False))
            .remote() for n in nodes}
    bad: list[str] = []
    for node in nodes:
        try:
            ray.get(refs[node.node_id], timeout=timeout_s)
        except Exception as exc:  # any failure on that node (import, missing file, timeout) is the finding
            lines = [ln for ln in str(exc).splitlines() if ln.strip()]
            bad.append(f"node {node.node_id[:12]} ({node.address}): {lines[-1][:200] if lines else type(exc).__name__}")
    if bad:
        raise RuntimeError(
            "these Ray nodes cannot run a trial: " + "; ".join(bad) + ". Install the project on every node at the "
            "same path, in the same Python environment (`pip install -e .` in a clone, or a shared folder), then "
            "start its Ray node again")


def _down(x: float, step: float = 0.01) -> float:
    """Round down to whole CPUs from 1 up, to hundredths below (Ray's resource granularity is finer)."""
    return float(math.floor(x + _EPS)) if x >= 1 else math.floor(x / step + _EPS) * step


def _count(have: float, each: float) -> int:
    return math.floor(have / each + _EPS) if each > 0 else 1 << 30


def fit_trials(nodes: list[Node], gpus_per_trial: float | None, cpus_per_trial: float | None) -> Fit:
    """How trials are sized and how many fit; a clear error when none can run.

    Defaults: 1 GPU per trial where the cluster has GPUs, else none; CPUs per trial: the GPU nodes' CPUs shared
    evenly among the trials their GPUs hold (the smallest share over those nodes), or 1 without GPUs."""
    if not nodes:
        raise RuntimeError("the Ray cluster has no live node")
    gpt = gpus_per_trial if gpus_per_trial is not None else (1.0 if any(n.gpus > 0 for n in nodes) else 0.0)
    if gpt > 1 and not float(gpt).is_integer():
        raise RuntimeError(f"--gpus-per-trial {gpt:g}: above 1 it must be a whole number (Ray's rule)")
    if gpt > 0:
        hosts = [n for n in nodes if _count(n.gpus, gpt) > 0]
        if not hosts:
            most = max(n.gpus for n in nodes)
            raise RuntimeError(
                f"--gpus-per-trial {gpt:g} asked for, but " + (
                    "the Ray cluster has no GPU: trials would wait forever; use --gpus-per-trial 0" if most == 0
                    else f"no node has that many GPUs (the most on one node is {most:g}; a trial runs on one node)"))
        cpt = cpus_per_trial if cpus_per_trial is not None else _down(
            min(n.cpus / _count(n.gpus, gpt) for n in hosts))
    else:
        hosts = [n for n in nodes if n.cpus > 0]
        cpt = cpus_per_trial if cpus_per_trial is not None else 1.0
        if cpt <= 0:
            raise RuntimeError("--cpus-per-trial must be above 0 on a cluster without GPUs")
    per_node = {n.node_id: min(_count(n.gpus, gpt) if gpt > 0 else 1 << 30, _count(n.cpus, cpt)) for n in hosts}
    per_node = {k: v for k, v in per_node.items() if v > 0}
    if not per_node:
        most = max(n.cpus for n in hosts)
        raise RuntimeError(f"--cpus-per-trial {cpt:g} is more than any node offers (the most on one node is "
                           f"{most:g}{' beside its GPUs' if gpt > 0 else ''}; a trial runs on one node)")
    return Fit(cpu=cpt, gpu=gpt, slots=sum(per_node.values()), per_node=per_node)
