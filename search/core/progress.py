"""Progress of long work as plain lines on stderr (readable in logs, not only on terminals)."""

from __future__ import annotations

import sys
import time


class Progress:
    """A progress callback printing `label: done/total (rate/s)` at most every `every` seconds, and at the end."""

    def __init__(self, label: str, every: float = 5.0):
        self.label, self.every, self.previous = label, every, 0
        self.start = self.last = self.called = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < self.previous:  # a new round (e.g. the next epoch): rates start again, from the last call
            self.start = self.called  # (not from now: `done` items of this round are already behind us)
        self.previous, self.called = done, now
        if done == total or now - self.last >= self.every:
            self.last = now
            rate = done / max(now - self.start, 1e-9)
            print(f"{self.label}: {done}/{total} ({rate:.3g}/s)", file=sys.stderr, flush=True)
