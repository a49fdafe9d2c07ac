"""The measurements of `search.bench`, one function per figure; each runs in a fresh process (see sections.py).

Step timings use the default `unet_losses` architecture (the reference method: depth 4, width 32, L1 + 0.05
perceptual + 0.1 TV) at 256x256, batch 8. The naive loop is written here in plain PyTorch on the same modules
(same math): fp32, contiguous tensors, a host sync every step. The project loop is `search.core.train.train` with its
defaults. FLOPs are counted by torch's FlopCounterMode on one forward + backward.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from data.corrupt import apply_mask, random_masks, scaled_hole
from data.images import DEFAULT_IMAGES, ImageSet, load_image, load_splits, scan
from losses.composite import CompositeLoss
from models.unet import UNet
from search.core.config import Config
from search.core.device import resolve_device, resolve_precision
from search.core.train import corruption_of, train


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reference_config(size: int, batch: int, device: str) -> Config:
    from studies.unet_losses import REFERENCE, STUDY

    flat = {**STUDY.fixed, **REFERENCE, "data.image_size": size, "data.hole_size": scaled_hole(size),
            "train.batch_size": batch, "train.device": device, "train.eval_every": 0}
    return Config.from_flat(flat).validate()


def bench_images(size: int, count: int) -> ImageSet:
    """The embedded images, repeated up to `count`: the step benchmarks need pixels, not variety."""
    sets, _ = load_splits(DEFAULT_IMAGES, size, 0.0, 0.0, {"train": count}, workers=2)
    pixels = sets["train"].pixels
    reps = -(-count // len(pixels))
    return ImageSet(pixels.repeat(reps, 1, 1, 1)[:count], ["x"] * count)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: str, device: str, n: int = 2048, seconds: float = 3.0) -> dict[str, Any]:
    """Measured matmul FLOP/s in the dtype the project loop computes in (the ceiling its convolutions face)."""
    dev = resolve_device(device)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    n = 8192 if dev.type == "cuda" else n
    a, b = torch.randn(n, n, device=dev, dtype=dt), torch.randn(n, n, device=dev, dtype=dt)
    a @ b
    _sync(dev)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
        if dev.type == "cuda":
            _sync(dev)
    _sync(dev)
    flops = 2 * n**3 * reps / (time.perf_counter() - t0)
    return {"dtype": dtype, "n": n, "flop_per_s": flops}


def step_flops(cfg: Config) -> float:
    """FLOPs of one training step's forward + backward (the optimizer's are negligible)."""
    device = resolve_device(cfg.train.device)
    model, loss_fn = UNet(cfg.model).to(device), CompositeLoss(cfg.loss).to(device)
    image = torch.rand(cfg.train.batch_size, 3, cfg.data.image_size, cfg.data.image_size, device=device)
    mask = random_masks(corruption_of(cfg), image.shape[0], cfg.data.image_size, device)
    with FlopCounterMode(display=False) as counter:
        loss, _ = loss_fn(model(apply_mask(image, mask)), image, mask)
        loss.backward()
    return float(counter.get_total_flops())


def naive_loop(cfg: Config, steps: int, warmup: int = 1) -> dict[str, Any]:
    """Plain PyTorch: fp32, contiguous memory, loss.item() after every step."""
    torch.manual_seed(0)
    device = resolve_device(cfg.train.device)
    model, loss_fn = UNet(cfg.model).to(device), CompositeLoss(cfg.loss).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr)
    bs, size = cfg.train.batch_size, cfg.data.image_size
    images = bench_images(size, bs * (steps + warmup))
    corruption = corruption_of(cfg)
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        image = images.batch(list(range(i * bs, (i + 1) * bs)), device)
        mask = random_masks(corruption, bs, size, device)
        loss, _ = loss_fn(model(apply_mask(image, mask)), image, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
    seconds = time.perf_counter() - t0
    return {"images_per_s": steps * bs / seconds, "step_s": seconds / steps, "peak_rss_mb": peak_rss_mb()}


def project_loop(cfg: Config, steps: int, compile_model: bool = False, barrier=None) -> dict[str, Any]:
    """`search.core.train.train` with its defaults: one epoch of `steps` to warm up, the second one timed.

    With a `barrier` (packed runs), every process starts its timed epoch at the same moment."""
    cfg.train.epochs, cfg.train.steps_per_epoch = 2, steps
    cfg.train.compile = compile_model
    images = bench_images(cfg.data.image_size, cfg.train.batch_size * steps)
    rates: list[float] = []
    clock: list[float] = []

    def report(metrics: dict, epoch) -> None:
        rates.append(metrics["train/images_per_s"])
        if barrier is not None and len(rates) == 1:
            barrier.wait()
        clock.append(time.time())

    result = train(cfg, report, data={"train": images, "val": images})
    if result.status != "completed":
        raise RuntimeError(f"the project loop {result.status}: {result.reason}")
    device = resolve_device(cfg.train.device)
    out = {"images_per_s": rates[-1], "step_s": cfg.train.batch_size / rates[-1], "first_epoch_images_per_s":
           rates[0], "precision": resolve_precision(cfg.train.precision, device),
           "channels_last": cfg.train.channels_last, "compile": compile_model, "peak_rss_mb": peak_rss_mb(),
           "timed_from": clock[0], "timed_to": clock[-1], "timed_images": steps * cfg.train.batch_size}
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def decode_rate(root: Path, size: int, count: int, workers: int) -> dict[str, Any]:
    """Decoding + resizing source images, as a folder `--data` does at start-up (threads, like load_splits)."""
    files = scan(root)[:count]
    if not files:
        raise ValueError(f"no source images to decode under {root}")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        ok = sum(pool.map(lambda p: _try_load(p, size), files))
    seconds = time.perf_counter() - t0
    return {"images": len(files), "decoded": ok, "images_per_s": len(files) / seconds, "workers": workers}


def _try_load(path: Path, size: int) -> bool:
    try:
        load_image(path, size)
        return True
    except Exception:  # corrupt files cost their attempt, as in a real load
        return False


def cache_rates(cache: Path, size: int, batch: int, seconds: float = 2.0) -> dict[str, Any]:
    """Training batches read straight from the prepared cache, the up-front read of the whole cache into memory
    (what training does), and the batches the training loader then delivers (holes are drawn inside the step)."""
    from data.cache import load_cache

    pixels, keys, _ = load_cache(cache)
    rng = np.random.default_rng(0)
    delivered, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        rows = np.sort(rng.choice(len(keys), min(batch, len(keys)), replace=False))
        torch.from_numpy(pixels[rows]).float().div_(255.0)
        delivered += len(rows)
    batch_rate = delivered / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    sets, report = load_splits(cache, size, 0.1, 0.1, {})
    load_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)
    delivered, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _, image in sets["train"].batches(batch, "cpu", shuffle=True, generator=gen):
            delivered += image.shape[0]
    return {"cache_batch_images_per_s": batch_rate, "cache_read_images_per_s": len(keys) / load_s,
            "cache_images": len(keys), "loader_images_per_s": delivered / (time.perf_counter() - t0)}


def ray_config(seconds: float) -> Config:
    """A small trial (64 px, depth-2 U-Net, L1) of about `seconds` on this machine: 3 epochs, steps calibrated."""
    cfg = Config.from_flat({
        "model.depth": 2, "model.width": 16, "loss.w_perceptual": 0.0, "train.batch_size": 8, "train.epochs": 1,
        "train.steps_per_epoch": 10, "data.image_size": 64, "data.hole_size": scaled_hole(64), "train.device": "cpu",
        "data.val_fraction": 0.2, "data.test_fraction": 0.0, "data.val_images": 8, "data.workers": 1,
    })
    data = {"train": bench_images(64, 64), "val": bench_images(64, 8)}
    train(cfg, data=data)  # warm-up
    timed = {}
    for steps in (10, 40):
        cfg.train.steps_per_epoch = steps
        t0 = time.perf_counter()
        train(cfg, data=data)
        timed[steps] = time.perf_counter() - t0
    # Two lengths separate the cost per step from the fixed cost per epoch (validation, set-up).
    per_step = max((timed[40] - timed[10]) / 30, 1e-4)
    per_epoch = max(timed[10] - 10 * per_step, 0.0)
    cfg.train.epochs = 3
    cfg.train.steps_per_epoch = max(1, round((seconds / 3 - per_epoch) / per_step))
    return cfg


def _fixed(cfg: Config) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_flat().items() if k.split(".")[0] in ("model", "loss", "optim", "train")}


def bare_run(cfg: Config) -> dict[str, float]:
    """The trial's configuration as two bare train() calls in one fresh process, as the two trials of the bench
    search run in one fresh Ray worker: the first loads its images (a trial does too), the second reuses them (a
    trial on a reused worker does too)."""
    from search.core.train import load_data

    cfg = Config.from_flat({**_fixed(cfg), **_ray_budget(cfg).flat()})
    out: dict[str, float] = {}
    data = None
    for tag in ("bare", "bare2"):
        t0, cpu0 = time.perf_counter(), time.process_time()
        data = data or load_data(cfg)
        train(cfg, data=data)
        out[f"{tag}_s"], out[f"{tag}_cpu_s"] = time.perf_counter() - t0, time.process_time() - cpu0
    return out


def summarise_pairs(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Medians over bare / trial pairs (see bench.ray_section: they run alternately, so that a machine whose speed
    drifts over minutes shifts both sides of a pair alike)."""
    for r in runs:
        r["overhead_fraction"] = r["trial_s"] / r["bare_s"] - 1
        r["overhead2_fraction"] = r["trial2_s"] / r["bare2_s"] - 1
    keys = dict.fromkeys(k for r in runs for k in r)  # thread names may differ between runs: absent is 0
    return {"pairs": runs, **{k: statistics.median(r.get(k, 0.0) for r in runs) for k in keys}}


def _ray_budget(cfg: Config, trials: int = 1):
    from search.tune.study import Budget

    return Budget(trials=trials, epochs=cfg.train.epochs, train_images=0, val_images=8,
                  image_size=cfg.data.image_size, steps_per_epoch=cfg.train.steps_per_epoch, val_fraction=0.2,
                  test_fraction=0.0)


def two_trial_search(cfg: Config) -> dict[str, float]:
    """Two trials, one after the other, through search.run's machinery (Ray Tune + Optuna + MLflow + our
    trainable): the first in a fresh Ray worker, the second on that worker reused, as most trials of a search run.
    Ray's start-up is measured apart (once per search, not per trial)."""
    from search.bench.accounting import TrialCpu
    from search.bench.procs import ProcessCpu
    from search.tune import execute
    from search.tune.plan import RunOptions, plan_run, stop_ray
    from search.tune.study import Study

    study = Study(name="bench", description="bench", space=_no_space, fixed=_fixed(cfg),
                  budget=_ray_budget(cfg, trials=2), asha=None)
    with tempfile.TemporaryDirectory() as tmp:
        args = RunOptions(study="bench", results=tmp, full_budget=True, max_concurrent=1,
                          cpus_per_trial=max(1, torch.get_num_threads()))
        t0 = time.perf_counter()
        plan = plan_run(args, study)
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            # The search's own report is not a figure here.
            with contextlib.redirect_stdout(io.StringIO()), ProcessCpu() as procs:
                summary = execute.run(plan, study, probe=TrialCpu)
        finally:
            stop_ray()
        tuned = time.perf_counter() - t0
        # Tune's own clock for each trial: the trainable from its start to its last report (data, MLflow included).
        last = {}
        for f in Path(tmp).glob("ray/bench/*/result.json"):
            rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
            if rows:
                final = max(rows, key=lambda r: r["time_total_s"])
                last[final["optuna_trial"]] = final
    if summary["counts"].get("COMPLETE") != 2 or sorted(last) != [0, 1]:
        raise RuntimeError(f"the benchmark trials did not complete: {summary['counts']}")
    out = {"ray_startup_s": startup, "per_search_s": startup + tuned - sum(r["time_total_s"] for r in last.values())}
    for number, tag in ((0, ""), (1, "2")):
        r = last[number]
        out |= {f"trial{tag}_s": r["time_total_s"], f"setup{tag}_s": r["time/setup_s"],
                f"bookkeeping{tag}_s": r["time/bookkeeping_s"], f"trial{tag}_cpu_s": r["time/cpu_s"],
                f"other{tag}_cpu_s": r["time/others_cpu_s"]}
    return {**out, **{f"cpu/{k}": v for k, v in procs.groups().items()},
            **{f"thread/{k}": v for k, v in procs.worker_threads().items()}}


def _no_space(trial) -> None:
    """The benchmark trial searches nothing: its whole configuration is fixed."""


if __name__ == "__main__":
    sys.exit("run python -m search.bench")
