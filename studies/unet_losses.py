"""The user's study: U-Net depth / width / architecture, loss weighting and learning-rate schedule.

Objective: `val/psnr_hole` (maximise), PSNR of the composited output over the hole pixels of the fixed validation
masks. No searched weight can game it: it is not one of the weighted losses, it is computed by the same metric code
for every trial, and it only looks at what the model invented (known pixels are composited back).
"""

from __future__ import annotations

from search.tune.study import Asha, Budget, Study


def space(trial) -> None:
    trial.suggest_int("model.depth", 3, 6)
    trial.suggest_categorical("model.width", [16, 24, 32, 48, 64])
    trial.suggest_categorical("model.upsample", ["transpose", "bilinear", "nearest"])
    trial.suggest_categorical("model.norm", ["none", "group", "instance"])
    trial.suggest_categorical("model.gated", [False, True])
    trial.suggest_categorical("model.dilated_bottleneck", [False, True])
    trial.suggest_categorical("model.prefill", ["none", "pyramid"])
    trial.suggest_categorical("model.residual", [False, True])
    trial.suggest_categorical("loss.recon", ["l1", "l2"])
    trial.suggest_float("loss.w_hole", 1.0, 20.0, log=True)
    trial.suggest_float("loss.w_perceptual", 0.005, 0.5, log=True)
    trial.suggest_categorical("loss.w_style", [0.0, 30.0, 120.0])
    trial.suggest_float("loss.w_tv", 0.01, 1.0, log=True)
    trial.suggest_float("optim.lr", 5e-5, 3e-3, log=True)
    kind = trial.suggest_categorical("sched.kind", ["constant", "cosine", "onecycle"])
    if kind != "onecycle":  # one-cycle has its own warm-up phase
        trial.suggest_float("sched.warmup_fraction", 0.0, 0.1)


# The reference method: the small U-Net, L1 + perceptual + TV, lr 3e-4 (its choice for real training).
REFERENCE = {
    "model.depth": 4, "model.width": 32, "model.upsample": "transpose", "model.norm": "none", "model.gated": False,
    "model.dilated_bottleneck": False, "model.prefill": "none", "model.residual": False,
    "loss.recon": "l1", "loss.w_hole": 6.0, "loss.w_perceptual": 0.05,
    "loss.w_style": 0.0, "loss.w_tv": 0.1, "optim.lr": 3e-4, "sched.kind": "constant", "sched.warmup_fraction": 0.0,
}

STUDY = Study(
    name="unet_losses",
    description=__doc__.strip().splitlines()[0],
    space=space,
    objective="val/psnr_hole",
    mode="max",
    fixed={"train.batch_size": 8, "loss.w_valid": 1.0},
    # The method's "real training" setting: 10 epochs on 1000 images, at 256x256.
    budget=Budget(trials=48, epochs=10, train_images=1000, val_images=256, image_size=256),
    # Without a GPU or without --data: small enough for 2 CPU cores in ~20 minutes, and said so when used.
    # 128 px keeps depth 6 meaningful (a 2x2 bottleneck).
    reduced=Budget(trials=8, epochs=4, train_images=0, val_images=8, image_size=128, max_concurrent=2,
                   val_fraction=0.2, test_fraction=0.2),
    asha=Asha(grace=1, reduction=2),
    warm_start=[REFERENCE],
)
