"""The best trial of a search, read from its Optuna storage, and its exact configuration for a retrain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data.corrupt import scaled_hole
from search.core.config import Config
from search.tune import summary
from search.tune.study import Study


def pick_trial(storage: str, study: Study, number: int) -> dict[str, Any]:
    """The best COMPLETE (full-budget) trial, or trial `number`; errors say what the storage holds instead."""
    try:
        report = summary.summarise(storage, study.name, study.mode)
    except KeyError:
        raise ValueError(f"no Optuna study {study.name!r} in {storage}: run python -m search.run --study "
                         f"{study.name} first, or give --storage / --results of that search") from None
    if number >= 0:
        found = [t for t in report["trials"] if t["number"] == number]
        if not found:
            raise ValueError(f"study {study.name} has no trial {number} (it has 0..{len(report['trials']) - 1})")
        if not found[0]["params"]:
            raise ValueError(f"trial {number} has no parameters recorded (state {found[0]['state']})")
        return found[0]
    if report["best"] is None:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(report["counts"].items())) or "no trials"
        raise ValueError(f"study {study.name} has no trial that ran the full budget ({counts}); continue the search "
                         "with --resume, or choose one with --trial N")
    return report["best"]


def retrain_config(study: Study, trial: dict, base: dict[str, Any] | None, data: str, images: int, epochs: int,
                   image_size: int, device: str) -> Config:
    """The trial's exact configuration (the search's shared values `base`, then its parameters) with the
    retrain's data, length and size (0 = the study's full budget)."""
    size = image_size or study.budget.image_size
    flat = {**(base if base is not None else study.fixed), **trial["params"]}
    flat.update({
        "data.root": str(Path(data).resolve()) if data else "", "data.image_size": size,
        "data.hole_size": scaled_hole(size), "data.train_images": images,
        "data.val_fraction": study.budget.val_fraction, "data.test_fraction": study.budget.test_fraction,
        "data.val_images": study.budget.val_images, "train.epochs": epochs or study.budget.epochs,
        "train.steps_per_epoch": 0, "train.device": device,
    })
    return Config.from_flat({k: v for k, v in flat.items() if not k.startswith("_")})
