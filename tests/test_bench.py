"""search.bench at tiny sizes: every section runs for real and reports figures that hang together."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from data.images import scan
from search.bench import __main__ as bench
from search.bench import parts as bench_parts
from search.bench import sections
from search.bench.procs import GROUPS, ProcessCpu


def test_step_flops_scale_with_pixels_and_loops_report_rates():
    small = bench_parts.step_flops(bench_parts.reference_config(32, 2, "cpu"))
    large = bench_parts.step_flops(bench_parts.reference_config(64, 2, "cpu"))
    # Convolutions dominate: 4x the pixels is 4x the work (the loss reductions are a rounding error).
    assert 3.9 < large / small < 4.1
    # The reference U-Net (72 GFLOP per image per step at 256) plus VGG16 to relu3_3 at 256 would be ~146+;
    # at 32 px that is 1/64 of it per image.
    per_image_at_256 = small / 2 * 64 / 1e9
    assert 100 < per_image_at_256 < 400
    peak = bench_parts.matmul_peak("fp32", "cpu", n=256, seconds=0.2)
    assert peak["dtype"] == "fp32" and peak["flop_per_s"] > 0


def test_bench_cli_writes_every_figure(tmp_path, capsys):
    source = tmp_path / "images"
    shutil.copytree(bench_parts.DEFAULT_IMAGES, source)
    (source / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "bench.json"
    rc = bench.main(["--only", "step,data", "--size", "64", "--batch", "2", "--steps", "1", "--data", str(source),
                     "--decode-images", "16", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    figures = json.loads(out.read_text())
    assert figures["naive"]["images_per_s"] > 0 and figures["project"]["images_per_s"] > 0
    assert figures["step_flops"] > 0 and figures["fraction_of_peak"] > 0
    assert figures["project"]["peak_rss_mb"] > 100  # torch alone is more than that
    assert figures["cache"]["cache_images"] == 41  # the broken file is not in the cache
    first = scan(source)[:16]
    assert figures["decode"]["decoded"] == 16 - sum(p.name == "broken.jpg" for p in first)
    assert figures["loader_over_step"] > 1
    text = capsys.readouterr().out
    assert "naive fp32 loop" in text and "training loader" in text


def test_ray_section_times_real_trials_in_pairs(capsys):
    figures: dict = {}
    args = bench.parse_args(["--only", "ray", "--trial-seconds", "2", "--pairs", "2"])
    sections.ray_section(args, figures)
    r = figures["ray"]
    assert len(r["pairs"]) == 2
    for pair in r["pairs"]:
        assert pair["bare_s"] > 0 and pair["trial_s"] > 0
        # The trial's own clock holds its set-up and its bookkeeping (3 epochs of checkpoints, MLflow, grids).
        assert 0 < pair["bookkeeping_s"] < pair["trial_s"] and 0 <= pair["setup_s"] < pair["trial_s"]
        assert pair["per_search_s"] >= pair["ray_startup_s"] > 0
        assert pair["trial_cpu_s"] > 0 and pair["bare_cpu_s"] > 0 and pair["other_cpu_s"] > 0  # Ray's daemons
        # The second trial ran on the reused worker, beside a second bare call in the bare process.
        assert pair["bare2_s"] > 0 and pair["trial2_s"] > 0 and pair["trial2_cpu_s"] > 0
        assert 0 <= pair["setup2_s"] < pair["trial2_s"]
        if Path("/proc/stat").exists():  # the CPU split by process: the trial worker did the work
            assert pair["cpu/trial worker"] > max(pair["cpu/raylet"], pair["cpu/gcs_server"], pair["cpu/driver"])
            assert pair["cpu/trial worker"] >= 0.5 * (pair["trial_cpu_s"] + pair["trial2_cpu_s"])
            assert any(k.startswith("thread/") for k in pair)
    # The reported overhead is the median over pairs of each pair's trial time over its bare time.
    for pair in r["pairs"]:
        assert pair["overhead_fraction"] == pytest.approx(pair["trial_s"] / pair["bare_s"] - 1)
    median = statistics.median(p["trial_s"] / p["bare_s"] - 1 for p in r["pairs"])
    assert r["overhead_fraction"] == pytest.approx(median)
    text = capsys.readouterr().out
    assert "pair 2: reused worker: bare" in text and "per trial, reused worker" in text and "raylet" in text


def test_unknown_section_is_named(capsys):
    assert bench.main(["--only", "gpu"]) == 2
    assert "unknown section(s) gpu" in capsys.readouterr().err


def test_process_cpu_counts_a_child_born_inside_the_window():
    if not Path("/proc/stat").exists():
        pytest.skip("per-process CPU needs Linux /proc")
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass"
    with ProcessCpu(every_s=0.2) as procs:
        subprocess.run([sys.executable, "-c", spin], check=True)
    groups = procs.groups()
    assert set(GROUPS) <= set(groups)
    # The child spun 1 CPU-s and is no Ray process; the last sample may miss at most the last 0.2 s of it.
    assert groups["not Ray"] >= 0.7
    assert groups["machine_s"] >= 0.9 and groups["wall_s"] >= 1.0
