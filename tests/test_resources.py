"""Trials sized node by node: CPUs per trial from the GPU nodes, fractional GPUs packed, clear errors."""

from __future__ import annotations

import pytest

from search.tune.resources import Node, fit_trials

HEAD = Node("head", cpus=32, gpus=0)  # a CPU-only head node beside the GPU workers


def test_cpus_per_trial_come_from_the_gpu_nodes_not_the_cluster_total():
    nodes = [HEAD, Node("g1", 16, 4), Node("g2", 16, 4)]
    fit = fit_trials(nodes, None, None)
    # 1 GPU per trial by default; 16 CPUs shared by the 4 trials of a GPU node (the total, 64 / 8, would say 8).
    assert (fit.gpu, fit.cpu, fit.slots) == (1.0, 4.0, 8)
    assert fit.per_node == {"g1": 4, "g2": 4}


def test_fractional_gpus_pack_trials_on_one_gpu():
    fit = fit_trials([HEAD, Node("g", 8, 1)], 0.25, None)
    assert (fit.gpu, fit.cpu, fit.slots) == (0.25, 2.0, 4)
    # Logical GPUs on a 2-CPU machine: 4 trials at 0.5 GPU each share its 2 CPUs.
    fit = fit_trials([Node("cpu-box", 2, 2)], 0.5, None)
    assert (fit.cpu, fit.slots) == (0.5, 4)
    # The smallest share over the GPU nodes wins, so every node's trials fit.
    fit = fit_trials([Node("a", 8, 2), Node("b", 4, 2)], 1, None)
    assert (fit.cpu, fit.slots) == (2.0, 4)


def test_cpu_only_clusters_count_cpus_node_by_node():
    fit = fit_trials([Node("a", 3, 0), Node("b", 3, 0)], None, 2)
    assert (fit.gpu, fit.cpu, fit.slots) == (0.0, 2, 2)  # one per node: 2 + 2 CPUs never make one trial across nodes
    assert fit_trials([Node("a", 1, 0), Node("b", 1, 0), Node("c", 1, 0)], None, None).slots == 3


@pytest.mark.parametrize("nodes, gpt, cpt, message", [
    ([HEAD], 1, None, "no GPU: trials would wait forever"),
    ([HEAD, Node("g", 8, 2)], 4, None, "no node has that many GPUs (the most on one node is 2"),
    ([HEAD, Node("g", 8, 2)], 1.5, None, "above 1 it must be a whole number"),
    ([Node("a", 4, 0), Node("b", 4, 0)], None, 6, "more than any node offers (the most on one node is 4"),
    ([], None, None, "no live node"),
])
def test_what_cannot_run_is_a_clear_error(nodes, gpt, cpt, message):
    with pytest.raises(RuntimeError, match=message.replace("(", r"\(")):
        fit_trials(nodes, gpt, cpt)
