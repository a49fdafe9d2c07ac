"""The search and everything that trains. Command modules (`run`, `retrain_best`, `evaluate`, `inpaint`,
`overfit`, `lr_find`, `bench`) sit here as thin entries over the rooms: `core` (plain PyTorch), `tune` (Ray Tune
and Optuna), `tracking` (MLflow) and `bench`. See the README's "How the code is laid out"."""
