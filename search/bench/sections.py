"""The three sections of `search.bench` (step, data, ray): each figure measured in a fresh process, then printed.

Training step: naive fp32 loop vs the project's loop, FLOP/s against a matmul peak measured here. Data path:
decoding source images vs reading the prepared cache vs what the step consumes. Ray: a trial's overhead over bare
`train()` calls, with the search's CPU split by process.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

SECTIONS = ("step", "data", "ray")


def isolated(fn_name: str, *args: Any) -> Any:
    """Run bench_parts.<fn_name>(*args) in a fresh process and return its result."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_call, fn_name, *args).result()


def _call(fn_name: str, *args: Any) -> Any:
    from search.bench import parts

    return getattr(parts, fn_name)(*args)


def packed(n: int, cfg, steps: int) -> dict[str, Any]:
    """N training processes on one device, timed together: all images of the timed epochs over the wall time from
    the first start to the last finish (a barrier lines up the starts after warm-up)."""
    ctx = get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        barrier = manager.Barrier(n)
        runs = [f.result() for f in [pool.submit(_call, "project_loop", cfg, steps, False, barrier)
                                     for _ in range(n)]]
    wall = max(r["timed_to"] for r in runs) - min(r["timed_from"] for r in runs)
    return {"processes": n, "images_per_s": sum(r["timed_images"] for r in runs) / wall,
            "per_process": [r["images_per_s"] for r in runs]}


def step_section(args: argparse.Namespace, figures: dict) -> None:
    from search.bench.parts import reference_config
    from search.core.device import resolve_device, resolve_precision

    device = resolve_device(args.device)
    steps = args.steps or (30 if device.type == "cuda" else 3)
    cfg = reference_config(args.size, args.batch, str(device))
    precision = resolve_precision(cfg.train.precision, device)
    say(f"step: {args.size}x{args.size}, batch {args.batch}, {steps} timed steps per loop on {device} "
        f"(project precision {precision})")
    naive = figures["naive"] = isolated("naive_loop", cfg, steps)
    say(f"  naive fp32 loop        {naive['images_per_s']:8.2f} img/s  ({naive['step_s']:.2f} s/step)")
    project = figures["project"] = isolated("project_loop", cfg, steps)
    say(f"  project loop           {project['images_per_s']:8.2f} img/s  ({project['step_s']:.2f} s/step; "
        f"{precision}, channels_last {project['channels_last']})")
    figures["speedup"] = project["images_per_s"] / naive["images_per_s"]
    say(f"  speed-up               {figures['speedup']:8.2f}x")
    if args.compile:
        comp = figures["project_compiled"] = isolated("project_loop", cfg, steps, True)
        say(f"  project + compile      {comp['images_per_s']:8.2f} img/s  (first epoch incl. compiling: "
            f"{comp['first_epoch_images_per_s']:.2f} img/s)")
    flops = figures["step_flops"] = isolated("step_flops", cfg)
    peak = figures["matmul_peak"] = isolated("matmul_peak", precision, str(device))
    fp32 = peak if precision == "fp32" else isolated("matmul_peak", "fp32", str(device))
    achieved = flops / project["step_s"]
    figures["fraction_of_peak"] = achieved / peak["flop_per_s"]
    figures["naive_fraction_of_fp32_peak"] = flops / naive["step_s"] / fp32["flop_per_s"]
    say(f"  work                   {flops / args.batch / 1e9:8.1f} GFLOP per image per step (forward + backward)")
    say(f"  achieved               {achieved / 1e9:8.1f} GFLOP/s = {figures['fraction_of_peak']:.0%} of the "
        f"{peak['flop_per_s'] / 1e9:.0f} GFLOP/s {precision} matmul peak measured here "
        f"(naive loop: {figures['naive_fraction_of_fp32_peak']:.0%} of the fp32 peak)")
    say(f"  peak memory            {project['peak_rss_mb']:8.0f} MB resident (naive loop {naive['peak_rss_mb']:.0f} MB)"
        + (f", {project['peak_gpu_mb']:.0f} MB on the GPU" if "peak_gpu_mb" in project else ""))
    if args.packed:
        pk = figures["packed"] = packed(args.packed, cfg, steps)
        say(f"  {pk['processes']} loops packed       {pk['images_per_s']:8.2f} img/s together "
            f"({', '.join(f'{r:.1f}' for r in pk['per_process'])})")


def data_section(args: argparse.Namespace, figures: dict) -> None:
    from data.images import DEFAULT_IMAGES
    from data.prepare import prepare

    source = Path(args.data) if args.data else DEFAULT_IMAGES
    workers = os.cpu_count() or 1
    # Decoding first, before preparing reads the sources (both read files the OS may already hold in memory).
    dec = figures["decode"] = isolated("decode_rate", source, args.size, args.decode_images, workers)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp) / "cache"
        if not args.cache:
            say(f"data: preparing a cache of {source} in a temporary folder")
            prepare(source, cache, args.size, workers=workers)
        rates = figures["cache"] = isolated("cache_rates", cache, args.size, args.batch)
    say(f"data: {source}")
    say(f"  decode + resize        {dec['images_per_s']:8.0f} img/s  ({dec['images']} source images, "
        f"{workers} threads)")
    say(f"  cache batches          {rates['cache_batch_images_per_s']:8.0f} img/s  (random batches of "
        f"{args.batch} from the cache file, {rates['cache_batch_images_per_s'] / dec['images_per_s']:.0f}x decoding)")
    say(f"  cache -> memory        {rates['cache_read_images_per_s']:8.0f} img/s  (all {rates['cache_images']} "
        f"images up front, as training does; {rates['cache_read_images_per_s'] / dec['images_per_s']:.0f}x decoding)")
    say(f"  training loader        {rates['loader_images_per_s']:8.0f} img/s  (shuffled batches from memory, "
        f"{rates['loader_images_per_s'] / dec['images_per_s']:.0f}x decoding)")
    if "project" in figures:
        ratio = figures["loader_over_step"] = rates["loader_images_per_s"] / figures["project"]["images_per_s"]
        say(f"  loader / step          {ratio:8.0f}x what the training step consumes")


def ray_section(args: argparse.Namespace, figures: dict) -> None:
    from search.bench.parts import ray_config, summarise_pairs
    from search.bench.procs import GROUPS

    cfg = ray_config(args.trial_seconds)
    say(f"ray: a trial of ~{args.trial_seconds:.0f} s ({cfg.train.epochs} epochs x {cfg.train.steps_per_epoch} "
        f"steps at {cfg.data.image_size}x{cfg.data.image_size}), twice: bare train() calls in one process, and "
        "two trials of one search on one Ray worker")
    runs = []
    for _ in range(max(1, args.pairs)):
        # Alternately, each in a fresh process: drift shifts both sides of a pair alike, and both start cold.
        runs.append({**isolated("bare_run", cfg), **isolated("two_trial_search", cfg)})
    r = figures["ray"] = summarise_pairs(runs)
    for i, pair in enumerate(r["pairs"], 1):
        say(f"  pair {i}: reused worker: bare {pair['bare2_s']:6.1f} s, as a Tune trial {pair['trial2_s']:6.1f} s "
            f"({pair['overhead2_fraction']:+.1%}); fresh worker: bare {pair['bare_s']:6.1f} s, as a Tune trial "
            f"{pair['trial_s']:6.1f} s ({pair['overhead_fraction']:+.1%})")
    for tag, what in (("2", "per trial, reused worker (most trials of a search)"),
                      ("", "per trial, fresh worker (the first trial of each worker)")):
        spread = [pair[f"overhead{tag}_fraction"] for pair in r["pairs"]]
        say(f"  {what}: {r[f'overhead{tag}_fraction']:+.1%} median (range {min(spread):+.1%} .. {max(spread):+.1%})")
        say(f"    set-up {r[f'setup{tag}_s']:.1f} s (MLflow run, data, checkpoint look-up), bookkeeping "
            f"{r[f'bookkeeping{tag}_s']:.1f} s (checkpoints, MLflow metrics, sample grids)")
        say(f"    CPU {r[f'trial{tag}_cpu_s']:.1f} s by the trial (bare: {r[f'bare{tag}_cpu_s']:.1f} s), "
            f"{r[f'other{tag}_cpu_s']:.1f} s by all other processes meanwhile, on {os.cpu_count()} cores")
    named = sum(r[f"cpu/{g}"] for g in GROUPS)
    say(f"  CPU over the whole two-trial search ({r['cpu/wall_s']:.1f} s wall, {r['cpu/machine_s']:.1f} CPU-s on "
        f"the machine, {named:.1f} seen by process):")
    for g in GROUPS:
        say(f"    {g:<22} {r[f'cpu/{g}']:8.1f} CPU-s  ({r[f'cpu/{g}'] / max(r['cpu/wall_s'], 1e-9):.0%} of a core)")
    threads = sorted(((k.split("/", 1)[1], v) for k, v in r.items() if k.startswith("thread/")), key=lambda kv: -kv[1])
    say("    inside the trial worker, by thread name: " + ", ".join(f"{n} {v:.1f}" for n, v in threads[:8]))
    say(f"  once per search        {r['per_search_s']:8.1f} s  (Ray start-up {r['ray_startup_s']:.1f} s, worker "
        "start, stores, summary)")


def say(line: str) -> None:
    print(line, flush=True)
