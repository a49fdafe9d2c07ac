"""The MLflow side: search runs (parent per search, child per trial), the retrain's run and model registry, the
evaluation run. No Ray or Optuna here."""
