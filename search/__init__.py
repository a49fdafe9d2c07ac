"""The search and everything that trains: the loop, Ray Tune, Optuna and MLflow adapters, the CLIs."""
