"""Fault points: named places where the fault-injection tests make the search's driver die, reached exactly.

A test sets `INPAINT_FAULT=<point>` (or `<point>:<n>`: the n-th time this process reaches it) for one `search.run`;
when a process reaches that point, it SIGKILLs the driver (`INPAINT_FAULT_PID`, which `search.run` sets to itself
before Ray starts, so trial workers inherit it) and then itself, so a point inside a trial stops the work there
too, as a machine that loses power would. `<point>:<n>:self` kills only the process that reaches it: a trial's
worker dying while the search goes on; with `INPAINT_FAULT_ONCE=<file>` only the first process to create that file
dies (a restarted worker counts from zero again and would die too).
Points: `trial_created`, `optuna_recorded`, `summary` (driver), `mid_epoch`, `checkpoint_write`, `mlflow_logging`
(trial workers).

Without `INPAINT_FAULT` (every normal run) `hit` returns at its first comparison: the variable is read once, at
import.
"""

from __future__ import annotations

import contextlib
import os
import signal

POINTS = ("trial_created", "mid_epoch", "checkpoint_write", "mlflow_logging", "optuna_recorded", "summary")
_SPEC = os.environ.get("INPAINT_FAULT") or None
_counts: dict[str, int] = {}


def arm_driver() -> None:
    """In the driver, before Ray starts: name it as the process to kill (workers inherit the environment)."""
    if _SPEC is not None:
        os.environ.setdefault("INPAINT_FAULT_PID", str(os.getpid()))


def hit(point: str) -> None:
    """Die here if the test asked for this point (and this is the n-th time this process reaches it)."""
    if _SPEC is None:
        return
    name, nth, who = (_SPEC.split(":") + ["", ""])[:3]
    if name != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] != int(nth or 1):
        return
    once = os.environ.get("INPAINT_FAULT_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # it happened once already, in another process
    if who != "self":
        driver = int(os.environ.get("INPAINT_FAULT_PID") or os.getpid())
        with contextlib.suppress(ProcessLookupError):  # another worker got there first
            os.kill(driver, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
