"""The search machinery: study declaration, run planning, Ray Tune execution, the trainable, the Optuna searcher,
the end-of-run summary. The only room (with `search.bench`) that imports Ray.

Importing this package sets Ray's environment defaults before any of its modules imports Ray (workers inherit
the environment): no token auth files, no usage stats, no progress tables (we print our own line per trial),
frequent experiment snapshots for --resume, and workers at normal priority (Ray starts them at niceness 15, so
trials would starve beside any other busy process; they are the job here).
"""

import os

for _key, _value in {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AIR_NEW_OUTPUT": "0",
                     "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
                     "TUNE_GLOBAL_CHECKPOINT_S": "1", "RAY_DEDUP_LOGS": "0",
                     "RAY_worker_niceness": "0"}.items():
    os.environ.setdefault(_key, _value)
