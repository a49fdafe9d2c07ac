"""The Study declaration: search space (define-by-run, flat keys), fixed values, objective, budgets, schedule.

A study is a small Python file in `studies/` defining `STUDY = Study(...)`; `load_study(name)` finds it by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.corrupt import scaled_hole
from search.config import Config

# Objectives are judged the same way for every trial, whatever the loss weights (see DESIGN.md).
OBJECTIVES = ("val/psnr_hole", "val/ssim_hole", "val/l1_hole", "val/psnr")


@dataclass(frozen=True)
class Budget:
    """How much one search spends: trials, and per trial epochs x training images at an image size."""

    trials: int
    epochs: int
    train_images: int  # 0 = all
    val_images: int
    image_size: int = 256
    steps_per_epoch: int = 0  # 0 = one pass over the training images
    max_concurrent: int = 0  # 0 = as many as the resources allow
    val_fraction: float = 0.1  # of the image folder; small folders (the embedded set) need more
    test_fraction: float = 0.1

    def flat(self) -> dict[str, Any]:
        """The budget as config keys (holes keep the reference coverage at any image size)."""
        return {
            "train.epochs": self.epochs, "data.train_images": self.train_images, "data.val_images": self.val_images,
            "data.image_size": self.image_size, "data.hole_size": scaled_hole(self.image_size),
            "train.steps_per_epoch": self.steps_per_epoch, "data.val_fraction": self.val_fraction,
            "data.test_fraction": self.test_fraction,
        }


@dataclass(frozen=True)
class Asha:
    """ASHA early stopping over epochs: a trial must reach `grace` epochs; 1/`reduction` go on at each rung."""

    grace: int = 1
    reduction: int = 2


@dataclass
class Study:
    name: str
    description: str
    space: Callable[[Any], dict[str, Any] | None]  # optuna.Trial -> None; suggest_* with flat keys
    objective: str = "val/psnr_hole"
    mode: str = "max"
    fixed: dict[str, Any] = field(default_factory=dict)  # flat keys applied to every trial
    budget: Budget = field(default_factory=lambda: Budget(trials=32, epochs=10, train_images=1000, val_images=256))
    reduced: Budget | None = None  # used without GPU or without --data, and said so
    asha: Asha | None = field(default_factory=Asha)
    warm_start: list[dict[str, Any]] = field(default_factory=list)  # first trials, e.g. the reference setting
    seed: int = 0
    source: str = ""  # where the study was loaded from (set by load_study)

    def validate(self) -> Study:
        """Errors name the offending key: unknown config keys, bad objective or mode."""
        if self.objective not in OBJECTIVES:
            raise ValueError(f"study {self.name}: objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"study {self.name}: mode must be 'min' or 'max', got {self.mode!r}")
        Config.from_flat(self.fixed)  # raises naming an unknown key
        for point in self.warm_start:
            Config.from_flat(point)
        return self


def available_studies() -> list[str]:
    import studies

    return sorted(m.name for m in pkgutil.iter_modules(studies.__path__) if not m.name.startswith("_"))


def load_study(name: str) -> Study:
    """The STUDY of studies/<name>.py, or of a study file given by path; an unknown name lists the available ones."""
    if name.endswith(".py"):
        path = Path(name).resolve()
        if not path.is_file():
            raise ValueError(f"study file not found: {path}")
        # Registered under a stable module name so a resumed search can unpickle its space function.
        module_name = f"_study_file_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        where = str(path)
    else:
        names = available_studies()
        if name not in names:
            raise ValueError(f"unknown study {name!r}; available: {', '.join(names)} (or give a path to a .py file)")
        module = importlib.import_module(f"studies.{name}")
        where = f"studies/{name}.py"
    study = getattr(module, "STUDY", None)
    if not isinstance(study, Study):
        raise ValueError(f"{where} must define STUDY = Study(...)")
    study.source = where
    return study.validate()
