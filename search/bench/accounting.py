"""Per-trial CPU accounting for `search.bench --only ray`, plugged into the trainable as its probe.

On a small machine CPU that Ray's daemons, the driver or other trials use is CPU a trial did not get, so every
benchmark trial reports its own CPU time (all its threads) and what all other processes used meanwhile.
"""

from __future__ import annotations

import time

from search.bench.procs import machine_cpu_s


class TrialCpu:
    """Started when a trial starts (the trainable calls the class); each call returns the figures so far."""

    def __init__(self) -> None:
        self.cpu0, self.machine0 = time.process_time(), machine_cpu_s()

    def __call__(self) -> dict[str, float]:
        cpu = time.process_time() - self.cpu0
        return {"time/cpu_s": cpu, "time/others_cpu_s": machine_cpu_s() - self.machine0 - cpu}
