"""Where things live in a results folder: the one place that builds default store URLs and file locations.

Every command that reads or writes a results folder (`search.run`, `retrain_best`, `evaluate`, the benchmark)
takes its defaults from here, so they cannot disagree about where a search keeps its stores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


@dataclass(frozen=True)
class Results:
    """A results folder (absolute): `optuna.db`, `mlflow.db`, `mlartifacts/`, `runs/<study>.json` (the search's
    state: budget, store URLs, storage path, MLflow parent run), `ray/` (Tune's state and the trials' checkpoints,
    unless --storage-path puts them elsewhere), `best/<study>/`, `eval/`."""

    root: Path

    @classmethod
    def at(cls, folder: str | Path) -> Results:
        return cls(Path(folder).expanduser().resolve())

    @property
    def optuna_url(self) -> str:
        return sqlite_url(self.root / "optuna.db")

    @property
    def mlflow_url(self) -> str:
        return sqlite_url(self.root / "mlflow.db")

    @property
    def artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def ray_dir(self) -> Path:
        return self.root / "ray"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    def state_file(self, study: str) -> Path:
        return self.root / "runs" / f"{study}.json"

    def best(self, study: str) -> Path:
        return self.root / "best" / study

    def read_state(self, study: str) -> dict[str, Any]:
        """The state `search.run` recorded for `study` here, or {} when there is none."""
        path = self.state_file(study)
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"the search state {path} is unreadable ({exc}); restore it from a backup, or move "
                             "the folder away and start a new search") from None

    def write_state(self, study: str, state: dict[str, Any]) -> None:
        path = self.state_file(study)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2, default=str))
        tmp.replace(path)


class StoreError(RuntimeError):
    """An Optuna storage or MLflow store that cannot be opened or used; the message names it and what to do."""


def first_line(exc: BaseException) -> str:
    """The first line of an error from a store (SQLAlchemy appends links and SQL on further lines)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"
