"""The MLflow side: search runs (parent per search, child per trial), the retrain's run and model registry, the
evaluation run. No Ray or Optuna here.

Importing it keeps MLflow from printing a "View run ... at: URL" line to stdout for every run ended against a
tracking server (one per trial, between our own lines); the dashboards' commands are printed at the end instead.
"""

import os

os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
