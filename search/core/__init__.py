"""The core: plain PyTorch, no Ray, Optuna or MLflow (a test checks it). The typed config, the one training
loop, device and precision, schedules, metrics, checkpoint I/O, classical baselines, evaluation, sample grids,
applying a model to images, and where things live in a results folder."""
