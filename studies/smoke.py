"""A tiny study for tests: 64 px images, a small U-Net, a few seconds per trial on a CPU."""

from __future__ import annotations

from search.tune.study import Asha, Budget, Study


def space(trial) -> None:
    trial.suggest_int("model.width", 4, 8)
    trial.suggest_categorical("model.upsample", ["transpose", "bilinear"])
    trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    trial.suggest_categorical("sched.kind", ["constant", "cosine"])


STUDY = Study(
    name="smoke",
    description=__doc__.strip().splitlines()[0],
    space=space,
    objective="val/psnr_hole",
    mode="max",
    fixed={"model.depth": 2, "train.batch_size": 4, "loss.w_perceptual": 0.0, "train.precision": "fp32",
           "data.workers": 1},
    budget=Budget(trials=4, epochs=3, train_images=8, val_images=4, image_size=64, steps_per_epoch=2,
                  val_fraction=0.2, test_fraction=0.2),
    reduced=None,
    asha=Asha(grace=1, reduction=2),
    warm_start=[{"model.width": 8, "model.upsample": "transpose", "optim.lr": 1e-3, "sched.kind": "constant"}],
)
