"""One small file per study: `STUDY = Study(...)` (see search/space.py)."""
