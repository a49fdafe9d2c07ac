"""The Study declaration: search space (define-by-run, flat keys), fixed values, objective, budgets, schedule.

A study is a small Python file in `studies/` defining `STUDY = Study(...)`; `load_study(name)` finds it by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from data.corrupt import scaled_hole
from search.core.config import Config

SPACE_CHECK_POINTS = 16  # random points of the space checked at load, beside every warm-start point

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

    def validate(self, points: int = SPACE_CHECK_POINTS) -> Study:
        """Errors name the study file and the offending key: unknown config keys in `fixed`, `warm_start` or the
        space, values the config refuses, a bad objective or mode. The space is sampled at `points` random points
        (seeded) and at every warm-start point, each through the config's validation at both budgets, so a
        misspelled key fails here in seconds instead of in every trial after Ray has started."""
        where = self.source or f"study {self.name}"
        if self.objective not in OBJECTIVES:
            raise ValueError(f"{where}: objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"{where}: mode must be 'min' or 'max', got {self.mode!r}")
        for what, flat in (("fixed", self.fixed), *(("warm_start", p) for p in self.warm_start)):
            try:
                Config.from_flat(flat)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{where}: {what}: {_message(exc)}") from None
        self._check_space(where, points)
        return self

    def _check_space(self, where: str, points: int) -> None:
        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "Trial N finished" lines for a check
        try:
            probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=self.seed))
            for point in self.warm_start:
                probe.enqueue_trial(point)
            budgets = [b for b in (self.budget, self.reduced) if b is not None]
            for _ in range(len(self.warm_start) + points):
                trial = probe.ask()
                try:
                    self.space(trial)
                except Exception as exc:  # the study's own code: report where it broke, then stop
                    raise ValueError(f"{where}: space() raised {type(exc).__name__}: {exc}{_line_in(exc, where)}"
                                     ) from None
                for budget in budgets:
                    flat = {**self.fixed, **budget.flat(), **trial.params}
                    try:
                        Config.from_flat(flat).validate()
                    except (KeyError, ValueError) as exc:
                        shown = ", ".join(f"{k}={v!r}" for k, v in sorted(trial.params.items()))
                        raise ValueError(f"{where}: space() suggests {_message(exc)} (at {shown})") from None
                probe.tell(trial, 0.0)
        finally:
            optuna.logging.set_verbosity(level)


def _message(exc: BaseException) -> str:
    return str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)


def _line_in(exc: BaseException, where: str) -> str:
    """' (line N)' of the deepest frame in the study file, when there is one."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(Path(where).name)]
    return f" (line {frames[-1].lineno})" if frames else ""


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
