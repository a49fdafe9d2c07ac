"""Who used the CPU during a benchmark search: per-process CPU seconds from /proc, grouped by role.

On a 2-core machine every CPU-second that Ray's daemons, the driver (Tune, Optuna, MLflow) or idle workers use is
a CPU-second the trial did not get, so `search.bench --only ray` splits the search's CPU by process. A background
thread samples /proc/<pid>/stat once a second; a process born and gone between two samples is missed, which is why
the machine-wide total is reported beside the groups. Linux only: elsewhere every figure is 0.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

GROUPS = ("trial worker", "driver", "raylet", "gcs_server", "other Ray processes", "not Ray")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_cpu_s() -> float:
    """CPU seconds all processes of this machine have used so far (Linux /proc/stat; 0 elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def _read(path: str, label_file: str) -> tuple[float, str] | None:
    """(CPU seconds so far, label) of /proc/<path>, or None if it is gone or unreadable. A process is labelled by
    its command line ("cmdline"), a thread by its name ("comm")."""
    try:
        stat = Path(f"/proc/{path}/stat").read_text()
        label = Path(f"/proc/{path}/{label_file}").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICK, label.strip() or stat[stat.index("(") + 1: stat.rindex(")")]


def _group(pid: str, cmd: str, driver: str) -> str:
    if pid == driver:
        return "driver"
    if "raylet" in cmd.split(" ")[0]:
        return "raylet"
    if "gcs_server" in cmd.split(" ")[0]:
        return "gcs_server"
    if cmd.startswith("ray::") or "/ray/" in cmd:  # workers, and Ray's Python daemons (agents, log monitor)
        return "other Ray processes"  # the busiest ray:: worker is relabelled "trial worker" at the end
    return "not Ray"


class ProcessCpu:
    """Context manager: CPU seconds by role group between enter and exit, plus the machine-wide total."""

    def __init__(self, every_s: float = 1.0):
        self.every_s = every_s
        self.first: dict[str, float] = {}
        self.last: dict[str, tuple[float, str]] = {}
        self._stop = threading.Event()
        self._sampler_cpu = 0.0
        self.started = False

    def _note(self, key: str, seen: tuple[float, str]) -> None:
        if key not in self.last and self.started:
            self.first.setdefault(key, 0.0)  # born during the window: all its CPU counts
        self.first.setdefault(key, seen[0])
        self.last[key] = seen

    def _sample(self) -> None:
        for pid in (p.name for p in Path("/proc").iterdir() if p.name.isdigit()) if Path("/proc").is_dir() else ():
            seen = _read(pid, "cmdline")
            if seen is None:
                continue
            self._note(pid, seen)
            if seen[1].startswith("ray::"):  # Ray workers: also by thread, to see what runs beside the training
                for task in Path(f"/proc/{pid}/task").glob("*"):
                    thread = _read(f"{pid}/task/{task.name}", "comm")
                    if thread is not None:
                        self._note(f"{pid}/{task.name}", thread)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            t0 = time.thread_time()
            self._sample()
            self._sampler_cpu += time.thread_time() - t0

    def __enter__(self) -> ProcessCpu:
        self._sample()
        self.started = True
        self.wall0, self.machine0 = time.perf_counter(), machine_cpu_s()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.wall_s, self.machine_s = time.perf_counter() - self.wall0, machine_cpu_s() - self.machine0

    def _used(self) -> dict[str, float]:
        return {key: max(0.0, cpu - self.first.get(key, 0.0)) for key, (cpu, _) in self.last.items()}

    def _trial_worker(self, used: dict[str, float]) -> str | None:
        """The busiest Ray worker process: the one that ran the trial."""
        workers = [key for key, (_, cmd) in self.last.items() if "/" not in key and cmd.startswith("ray::")]
        return max(workers, key=lambda key: used[key], default=None)

    def groups(self) -> dict[str, float]:
        """CPU seconds per group in GROUPS (the sampler's own CPU taken off the driver), plus wall and machine."""
        used, driver = self._used(), str(os.getpid())
        busiest = self._trial_worker(used)
        out = dict.fromkeys(GROUPS, 0.0)
        for key, (_, cmd) in self.last.items():
            if "/" not in key:  # processes; "pid/tid" keys are threads
                out["trial worker" if key == busiest else _group(key, cmd, driver)] += used[key]
        out["driver"] = max(0.0, out["driver"] - self._sampler_cpu)
        return {**out, "wall_s": self.wall_s, "machine_s": self.machine_s}

    def worker_threads(self) -> dict[str, float]:
        """CPU seconds of the trial worker's threads, summed by thread name, busiest first."""
        used = self._used()
        busiest = self._trial_worker(used)
        names: dict[str, float] = {}
        for key, (_, name) in self.last.items():
            if busiest is not None and key.startswith(f"{busiest}/"):
                names[name] = names.get(name, 0.0) + used[key]
        return dict(sorted(names.items(), key=lambda kv: -kv[1]))
