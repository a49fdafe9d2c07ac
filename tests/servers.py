"""Real servers on 127.0.0.1 for tests: a throwaway PostgreSQL cluster and an MLflow tracking server.

Without the binaries a test that asks for one is skipped (INPAINT_REQUIRE_SERVERS=1, as CI sets: it fails instead).
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

INSTALL = "install them with .ci/servers.sh (as root, Debian) and pip install -e '.[postgres]'"


def unavailable(reason: str) -> NoReturn:
    """Skip the test for a server that cannot run here, or fail it when INPAINT_REQUIRE_SERVERS=1 (CI)."""
    message = f"{reason}: {INSTALL}"
    if os.environ.get("INPAINT_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{message} (INPAINT_REQUIRE_SERVERS=1)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


@dataclass
class Postgres:
    """A running cluster; calling it creates a fresh database and returns its SQLAlchemy/Optuna URL."""

    port: int
    root: Path  # data folder (root / "data"), socket folder (root) and log (root / "log")
    names: itertools.count = field(default_factory=lambda: itertools.count(1))

    def __call__(self, name: str = "db") -> str:
        name = f"{name}_{next(self.names)}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _")
        made = subprocess.run([str(pg_bin() / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                               name], capture_output=True, text=True)
        if made.returncode:
            raise RuntimeError(f"createdb {name} failed: {made.stderr.strip()}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


def pg_bin() -> Path:
    """The newest Debian PostgreSQL bin folder (/usr/lib/postgresql/N/bin), else the one holding pg_ctl on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(re.sub(r"\D", "", p) or 0))
    path = found[-1] if found else shutil.which("pg_ctl")
    if not path:
        unavailable("PostgreSQL's binaries are missing (no /usr/lib/postgresql/*/bin/pg_ctl)")
    return Path(path).parent


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[Postgres]:
    """Starts PostgreSQL (initdb --auth=trust in a temp folder, pg_ctl on a free 127.0.0.1 port, socket in that
    folder, fsync off; as the postgres user when run as root) for the session. Yields a `Postgres`: call it,
    `postgres_url("study")`, for the URL of a new empty database ("postgresql://postgres@127.0.0.1:PORT/study_1").
    Stopped with `pg_ctl stop -m fast` (then `-m immediate`) at the end of the session, always; the folder removed.
    """
    bin_dir = pg_bin()
    try:
        from sqlalchemy.engine import make_url

        make_url("postgresql://").get_dialect().import_dbapi()  # the driver plain postgresql:// selects
    except ImportError as exc:
        unavailable(f"no driver for postgresql:// URLs ({exc})")
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        if not shutil.which("runuser"):
            unavailable("runuser is missing (needed to run PostgreSQL as the postgres user)")
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("there is no 'postgres' user")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="inpaint-pg-"))
    if as_user:
        os.chown(root, user.pw_uid, user.pw_gid)
    data, log, port = root / "data", root / "log", free_port()

    def pg_ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), *args],
                              capture_output=True, text=True, timeout=120, cwd=root)

    try:
        init = subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres",
                               "--no-locale", "-E", "UTF8", "--no-sync"], capture_output=True, text=True, cwd=root)
        if init.returncode:
            raise RuntimeError(f"initdb failed in {root}:\n{init.stdout}{init.stderr}")
        start = pg_ctl("-o", f"-p {port} -h 127.0.0.1 -k {root} -F", "-l", str(log), "-w", "-t", "60", "start")
        if start.returncode:
            raise RuntimeError(f"PostgreSQL did not start on 127.0.0.1:{port}:\n{start.stderr}\n{tail(log)}")
        yield Postgres(port, root)
    finally:
        if (data / "postmaster.pid").exists() and pg_ctl("-m", "fast", "-w", "-t", "30", "stop").returncode:
            pg_ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM to the process group that `proc` leads; SIGKILL to whatever of it is left after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader: a zombie still counts as a member of the group
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


@dataclass(frozen=True)
class MlflowServer:
    url: str  # http://127.0.0.1:PORT, for mlflow.MlflowClient(url) or MLFLOW_TRACKING_URI
    artifacts: Path  # --artifacts-destination: where logged artifacts land
    backend: Path  # the sqlite file behind --backend-store-uri
    log: Path  # the server's stdout and stderr


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[MlflowServer]:
    """Starts `mlflow server` (this Python's mlflow, one worker, job execution off) on a free 127.0.0.1 port with a
    fresh sqlite backend and --serve-artifacts into a temp folder, and waits for /health. Shared by the session:
    tests use their own experiment names. At the end its process group gets SIGTERM (SIGKILL after 15 s) and the
    folder is removed.
    """
    if importlib.util.find_spec("mlflow") is None or importlib.util.find_spec("uvicorn") is None:
        unavailable("mlflow (with its server's uvicorn) is not installed")
    root = Path(tempfile.mkdtemp(prefix="inpaint-mlflow-"))
    server = MlflowServer(f"http://127.0.0.1:{free_port()}", root / "artifacts", root / "mlflow.db", root / "log")
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{server.backend}",
               "--artifacts-destination", str(server.artifacts), "--serve-artifacts", "--host", "127.0.0.1",
               "--port", server.url.rsplit(":", 1)[1], "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(server.log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{server.url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {proc.returncode}" if proc.poll() is not None else "no /health within 120 s"
                raise RuntimeError(f"mlflow server at {server.url}: {state}; its log:\n{tail(server.log)}")
            time.sleep(0.25)
        yield server
    finally:
        stop_group(proc)
        shutil.rmtree(root, ignore_errors=True)


class RayCluster:
    """A multi-node Ray cluster on this machine: `ray start --head` and `ray start --address` workers, each node in
    its own process group (so one can be killed like a machine that dies), all on 127.0.0.1, one temp folder.

    Nodes are found by their raylet's `--node_id=` argument; `kill_node` SIGKILLs that node's whole group.
    """

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp = root / "ray"  # short: Ray's socket paths must stay under 107 bytes
        self.nodes: list[subprocess.Popen] = []

    def _start(self, args: list[str], name: str, python: str = sys.executable) -> None:
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        log = self.root / f"{name}.log"
        with open(log, "wb") as out:
            command = [python, "-m", "ray.scripts.scripts", "start", "--node-ip-address=127.0.0.1",
                       "--disable-usage-stats", f"--dashboard-agent-listen-port={free_port()}", *args]
            start = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                   timeout=180)
        if start.returncode:
            raise RuntimeError(f"ray start ({name}) failed:\n{tail(log)}")

    def add_head(self, cpus: int, gpus: int = 0) -> None:
        self._start(["--head", f"--port={self.port}", f"--num-cpus={cpus}", f"--num-gpus={gpus}",
                     "--include-dashboard=false", f"--temp-dir={self.temp}"], "head")

    def add_worker(self, cpus: int, gpus: int = 0, python: str = sys.executable) -> None:
        """A worker node whose processes run `python` (another environment makes a node unlike the others)."""
        self._start([f"--address={self.address}", f"--num-cpus={cpus}", f"--num-gpus={gpus}"],
                    f"worker{len(self._raylets())}", python)

    def _raylets(self) -> dict[str, int]:
        """node id -> process group of that node, for the raylets of this cluster."""
        found = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                args = (proc / "cmdline").read_bytes().split(b"\0")
                if not args[0].endswith(b"/raylet") or str(self.temp).encode() not in b" ".join(args):
                    continue
                node = next(a.split(b"=", 1)[1].decode() for a in args if a.startswith(b"--node_id="))
                found[node] = os.getpgid(int(proc.name))
            except (OSError, StopIteration):
                continue
        return found

    def node_ids(self) -> list[str]:
        return sorted(self._raylets())

    def kill_node(self, node_id: str) -> None:
        """SIGKILL every process of that node (raylet, its workers, its agents), as if the machine died."""
        os.killpg(self._raylets()[node_id], signal.SIGKILL)

    def stop(self) -> None:
        """Kill every process that belongs to the cluster (never `ray stop`: it would stop other clusters too)."""
        marker = str(self.temp).encode()
        groups = set(self._raylets().values())
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if marker in (proc / "cmdline").read_bytes():
                        groups.add(os.getpgid(int(proc.name)))
                except OSError:
                    continue
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)


@pytest.fixture()
def ray_cluster() -> Iterator[RayCluster]:
    """An empty `RayCluster` in a temp folder (add_head, add_worker); every node is killed at the end."""
    if importlib.util.find_spec("ray") is None:
        unavailable("Ray is not installed in this environment")
    root = Path(tempfile.mkdtemp(prefix="inpaint-ray-", dir="/tmp"))
    cluster = RayCluster(root)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
