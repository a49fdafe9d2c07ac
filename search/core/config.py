"""The typed config tree of one training run and its flat `section.field` form.

The flat keys (`model.depth`, `loss.w_perceptual`, `optim.lr`, `sched.kind`, ...) are the one parameter name
used everywhere: Optuna parameter, Ray config key, MLflow param, study key, checkpoint config.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any

from losses.composite import LossConfig
from models.unet import UNetConfig

SCHEDULES = ("constant", "cosine", "step", "onecycle", "range")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class DataConfig:
    root: str = ""  # image folder; "" = the embedded default images
    image_size: int = 256
    n_holes: int = 4
    hole_size: int = 32  # pixels at image_size
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    train_images: int = 0  # cap on training images; 0 = all
    val_images: int = 256  # cap on validation images (validation runs every epoch)
    workers: int = 4  # decoding threads


@dataclass
class OptimConfig:
    lr: float = 3e-4  # the reference method's rate for real training
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0  # max gradient norm; 0 = off


@dataclass
class SchedConfig:
    kind: str = "constant"  # constant | cosine | step | onecycle | range (lr_find: lr*min_lr_ratio -> lr, log)
    warmup_fraction: float = 0.0  # linear warm-up over this fraction of all steps
    min_lr_ratio: float = 0.01  # cosine / onecycle end at lr * this
    step_every: float = 0.33  # step: decay every this fraction of all steps
    step_gamma: float = 0.1


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 8
    steps_per_epoch: int = 0  # 0 = one pass over the training images
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto: bf16 where the device supports it, else fp32 | fp32 | bf16 | fp16
    channels_last: bool = True
    compile: bool = False  # torch.compile the U-Net (pays off only for long runs: see search.bench)
    eval_every: int = 1  # validate every N epochs (and after the last); 0 = never
    seed: int = 0
    fixed_train_masks: bool = False  # the overfit check: each training image keeps the same holes
    train_mask_seed: int = 99
    val_mask_seed: int = 1234


@dataclass
class Config:
    model: UNetConfig = field(default_factory=UNetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> Config:
        self.model.validate()
        self.loss.validate()
        if self.sched.kind not in SCHEDULES:
            raise ValueError(f"sched.kind must be one of {', '.join(SCHEDULES)}, got {self.sched.kind!r}")
        if self.train.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.train.precision!r}")
        if not 0 <= self.sched.warmup_fraction < 1:
            raise ValueError(f"sched.warmup_fraction must be in [0, 1), got {self.sched.warmup_fraction}")
        if self.optim.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.optim.lr}")
        if self.train.epochs < 1 or self.train.batch_size < 1:
            raise ValueError("train.epochs and train.batch_size must be >= 1")
        if self.data.image_size // 2**self.model.depth < 2:
            raise ValueError(
                f"model.depth {self.model.depth} leaves a bottleneck under 2x2 pixels at data.image_size "
                f"{self.data.image_size}; use depth <= {max(2, (self.data.image_size // 2).bit_length() - 1)}"
            )
        if self.data.image_size % 2 ** self.model.depth:
            raise ValueError(
                f"data.image_size {self.data.image_size} must be divisible by 2**model.depth = {2**self.model.depth}"
            )
        return self

    def to_flat(self) -> dict[str, Any]:
        """{'model.depth': 4, 'loss.w_tv': 0.1, ...} for every field."""
        return {
            f"{section.name}.{f.name}": getattr(getattr(self, section.name), f.name)
            for section in dataclasses.fields(self)
            for f in dataclasses.fields(getattr(self, section.name))
        }

    @classmethod
    def from_flat(cls, flat: dict[str, Any], base: Config | None = None) -> Config:
        """A config from flat keys over `base` (defaults if None). Unknown keys are an error naming them."""
        cfg = dataclasses.replace(base) if base else cls()
        # Copy each section so updating one config never changes `base`.
        for section in dataclasses.fields(cfg):
            setattr(cfg, section.name, dataclasses.replace(getattr(cfg, section.name)))
        known = cfg.to_flat()
        unknown = sorted(k for k in flat if k not in known)
        if unknown:
            named = ", ".join(k + "".join(f" (did you mean {m}?)" for m in difflib.get_close_matches(k, known, 1))
                              for k in unknown)
            raise KeyError(f"unknown config key(s): {named}; known keys: {', '.join(sorted(known))}")
        for key, value in flat.items():
            section_name, name = key.split(".", 1)
            section = getattr(cfg, section_name)
            setattr(section, name, _coerce(key, value, _field_type(section, name)))
        return cfg


def _field_type(section: Any, name: str) -> type:
    hints = typing.get_type_hints(type(section))
    return hints[name]


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Values arrive from argparse strings, Optuna (floats for ints), JSON and checkpoints."""
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if kind is int:
            as_float = float(value)
            if as_float != int(as_float):
                raise ValueError(value)
            return int(as_float)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"config key {key}: {value!r} is not a valid {kind.__name__}") from None
