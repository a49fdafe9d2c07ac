"""How training images reach Ray trials: every trial reading a shared prepared cache, or one copy in the object store.

    python benchmarks/data_transport.py [--images 1000,20000] [--trials 2] [--val 64] [--cache DIR] [--keep]
                                        [--two-node] [--json PATH]

Two ways, each with K trials (Ray actors, num_cpus=1) loading at the same time on a private local Ray cluster
(`ray.init(address="local", num_cpus=K, include_dashboard=False, object_store_memory=...)`):

    shared   each trial calls data.images.load_splits(cache, ...) on a prepared cache (pixels.u8 memory-mapped, its
             split rows copied into the trial's own memory), as trials do today when all nodes see one path
    store    the driver calls load_splits once, ray.put()s {split: (uint8 array (N, 3, S, S), names)} and drops its
             own copy; each trial ray.get()s it (numpy arrays backed by the node's shared-memory object store,
             read-only) and wraps them in ImageSet(pixels=torch.from_numpy(arr), names)

Per trial it reports the seconds until its sets are in memory (shared: load_splits; store: ray.get), the seconds
until its first training batch (ImageSet.batch of 8 random rows, counted from the same start), and the memory
the trial process adds, from /proc/<pid>/smaps_rollup: RSS, PSS (shared pages divided among the processes mapping
them) and USS (private pages), measured right after loading and again after every page of the sets was read
once (a zero-copy mapping only faults pages in when they are touched; one epoch touches them all). For the
store way also the driver's load + put seconds, the bytes allocated in the object store's file (read through
/proc/self/map_files: /dev/shm, or an on-disk fallback file when an object does not fit) and how much /dev/shm
grew. USS counts shared-memory pages as private while only one process maps them (the driver, right after its
put); "+anon" (Pss_Anon) is the process's own heap, the copies it made.

With --two-node it then starts its own 2-node cluster on loopback (`ray start`, head with 0 CPUs that holds the
driver's object, a worker node with K CPUs running the trials; own --temp-dir, own ports) and times the trials'
ray.get there: the object crosses to the worker node's store once, concurrent gets wait for that one transfer.

Training images: a cache in data.prepare's format (pixels.u8, index.tsv, meta.json) built under /tmp from the
embedded default images, repeated under distinct keys until the largest --images count of train rows (and --val
val rows; split fractions val 0.01, test 0) exist; 20000 images at 256 px take 3.9 GB of disk. It is deleted at
the end unless --keep, or read as is with --cache DIR (built there first if DIR holds no cache). The cache file is
read from the page cache (it was just written), so the shared times are warm-cache times.

Only processes this script starts are stopped (by process id); it never runs `ray stop`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402
import torch  # noqa: E402

from data.cache import INDEX, META, PIXELS, SKIPPED  # noqa: E402
from data.images import (  # noqa: E402
    DEFAULT_IMAGES,
    ImageSet,
    assign_splits,
    load_cache,
    load_image,
    load_splits,
    scan,
    split_of,
)

SIZE = 256
VAL_FRACTION, TEST_FRACTION = 0.01, 0.0
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1e6
NOT_WRITABLE = "The given NumPy array is not writable"


# ---------------------------------------------------------------------------------------------------------------
# memory


def smaps(pid: int | str = "self") -> dict[str, int]:
    """Bytes of RSS, PSS, USS (private clean + dirty) and shared pages of one process, from smaps_rollup."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "kB":
            fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return {
        "rss": fields.get("Rss", 0),
        "pss": fields.get("Pss", 0),
        "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
        "shared": fields.get("Shared_Clean", 0) + fields.get("Shared_Dirty", 0),
        "anon": fields.get("Pss_Anon", 0),  # the process's own heap: copies it made
        "pss_shmem": fields.get("Pss_Shmem", 0),  # its share of shared-memory pages (the object store)
    }


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def shm_used() -> int:
    st = os.statvfs("/dev/shm")
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def plasma_bytes() -> dict[str, int]:
    """Bytes allocated in the object store files this process maps (the node's store in /dev/shm, and fallback
    files on disk when an object did not fit): the store's real memory, a high-water mark (freed objects leave
    their pages allocated for reuse). Read through /proc/self/map_files, as the files are already unlinked."""
    found: dict[tuple[int, int], tuple[str, int]] = {}
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or "/plasma" not in parts[5]:
            continue
        try:
            st = os.stat(f"/proc/self/map_files/{parts[0]}")
        except OSError:
            continue
        kind = "shm" if parts[5].startswith("/dev/shm/") else "fallback"
        found[(st.st_dev, st.st_ino)] = (kind, st.st_blocks * 512)
    return {kind: sum(b for k, b in found.values() if k == kind) for kind in ("shm", "fallback")}


# ---------------------------------------------------------------------------------------------------------------
# the synthetic cache


def rows_needed(n_train: int, n_val: int) -> list[tuple[str, str]]:
    """(key, split) of rows until the splits hold n_train train and n_val val rows, keys distinct."""
    names = [p.name for p in scan(DEFAULT_IMAGES)]
    rows, counts = [], {"train": 0, "val": 0, "test": 0}
    rep = 0
    while counts["train"] < n_train or counts["val"] < n_val:
        for name in names:
            key = f"r{rep:05d}/{name}"
            split = split_of(key, VAL_FRACTION, TEST_FRACTION)
            counts[split] += 1
            rows.append((key, split))
        rep += 1
    return rows


def cache_fits(cache: Path, n_train: int, n_val: int) -> bool:
    try:
        pixels, keys, meta = load_cache(cache)
    except (OSError, ValueError, KeyError):
        return False
    chosen = assign_splits(keys, VAL_FRACTION, TEST_FRACTION)
    return meta["size"] == SIZE and len(chosen["train"]) >= n_train and len(chosen["val"]) >= n_val


def build_cache(cache: Path, n_train: int, n_val: int) -> float:
    """Write a data.prepare-format cache of repeated default images; returns seconds."""
    t0 = time.perf_counter()
    files = scan(DEFAULT_IMAGES)
    images = np.stack([load_image(p, SIZE).transpose(2, 0, 1) for p in files])
    rows = rows_needed(n_train, n_val)
    cache.mkdir(parents=True, exist_ok=True)
    chunk = 512
    with open(cache / PIXELS, "wb") as pix, open(cache / INDEX, "w") as index:
        for start in range(0, len(rows), chunk):
            idx = np.arange(start, min(start + chunk, len(rows))) % len(images)
            pix.write(images[idx].tobytes())
        for i, (key, split) in enumerate(rows):
            index.write(f"{i}\t{split}\t{key}\n")
    (cache / SKIPPED).write_text("")
    meta = {"version": 1, "size": SIZE, "count": len(rows), "skipped": 0, "source": f"{DEFAULT_IMAGES} repeated",
            "complete": True}
    (cache / META).write_text(json.dumps(meta, indent=2))
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------------------
# a trial


def limits_for(n_train: int, n_val: int) -> dict[str, int]:
    return {"train": n_train, "val": n_val, "test": 0}


def sets_from_payload(payload: dict[str, tuple[np.ndarray, list[str]]]) -> dict[str, ImageSet]:
    """ImageSets on the (read-only, shared-memory) arrays a ray.get returned; no copy."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=NOT_WRITABLE, category=UserWarning)
        return {split: ImageSet(pixels=torch.from_numpy(px), names=list(names)) for split, (px, names) in
                payload.items()}


def first_batch(sets: dict[str, ImageSet], batch: int = 8) -> float:
    """Mean of one training batch drawn as the training loop draws it (so it is really computed)."""
    train = sets["train"]
    idx = torch.randint(0, len(train), (batch,), generator=torch.Generator().manual_seed(0))
    return float(train.batch(idx).mean())


@ray.remote(num_cpus=1)
class Trial:
    """One trial process: loads its sets either way and reports times and its own memory."""

    def __init__(self) -> None:
        torch.set_num_threads(1)
        self.sets: dict[str, ImageSet] | None = None
        self.payload: Any = None

    def ready(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    def memory(self) -> dict[str, int]:
        gc.collect()
        return smaps()

    def load_shared(self, root: str, n_train: int, n_val: int) -> dict[str, float]:
        t0 = time.perf_counter()
        self.sets, _ = load_splits(Path(root), SIZE, VAL_FRACTION, TEST_FRACTION, limits_for(n_train, n_val), 1)
        t1 = time.perf_counter()
        first_batch(self.sets)
        t2 = time.perf_counter()
        return {"ready_s": t1 - t0, "first_batch_s": t2 - t0, "train": len(self.sets["train"])}

    def get_store(self, refs: list[ray.ObjectRef]) -> dict[str, float]:
        # The ref arrives inside a list so that Ray does not resolve it before the call: the get is timed here.
        t0 = time.perf_counter()
        self.payload = ray.get(refs[0])
        t1 = time.perf_counter()
        self.sets = sets_from_payload(self.payload)
        first_batch(self.sets)
        t2 = time.perf_counter()
        writable = bool(self.payload["train"][0].flags.writeable)
        return {"ready_s": t1 - t0, "first_batch_s": t2 - t0, "train": len(self.sets["train"]),
                "writable": writable}

    def store_bytes(self) -> dict[str, int]:
        return plasma_bytes()

    def touch(self) -> float:
        """Read one byte of every page of every set (what one epoch does to the mapping); returns seconds."""
        t0 = time.perf_counter()
        total = 0
        for s in (self.sets or {}).values():
            flat = s.pixels.numpy().reshape(-1)
            total += int(flat[::PAGE].sum())
        return time.perf_counter() - t0


def start_trials(k: int, options: dict[str, Any] | None = None) -> tuple[list[Any], list[dict[str, Any]]]:
    actors = [Trial.options(**(options or {})).remote() for _ in range(k)]
    info = ray.get([a.ready.remote() for a in actors])
    return actors, info


def stop_trials(actors: list[Any]) -> None:
    for a in actors:
        ray.kill(a)
    time.sleep(1.0)


def run_trials(actors: list[Any], call: str, *args: Any) -> dict[str, Any]:
    """All trials load at once; memory before, after loading and after touching every page, per trial."""
    before = ray.get([a.memory.remote() for a in actors])
    t0 = time.perf_counter()
    loads = ray.get([getattr(a, call).remote(*args) for a in actors])
    wall = time.perf_counter() - t0
    after = ray.get([a.memory.remote() for a in actors])
    touch = ray.get([a.touch.remote() for a in actors])
    touched = ray.get([a.memory.remote() for a in actors])
    stores = ray.get([a.store_bytes.remote() for a in actors])
    trials = [
        {**load, "touch_s": t, "added": delta(m1, m0), "added_touched": delta(m2, m0)}
        for load, t, m0, m1, m2 in zip(loads, touch, before, after, touched, strict=True)
    ]
    return {"wall_s": wall, "trials": trials, "trial_store_alloc": stores[0]}


# ---------------------------------------------------------------------------------------------------------------
# the two ways


def measure_shared(cache: Path, n_train: int, n_val: int, k: int) -> dict[str, Any]:
    actors, _ = start_trials(k)
    try:
        return {"way": "shared", "images": n_train, **run_trials(actors, "load_shared", str(cache), n_train, n_val)}
    finally:
        stop_trials(actors)


def driver_put(cache: Path, n_train: int, n_val: int) -> tuple[ray.ObjectRef, dict[str, Any]]:
    """The driver loads the sets once and puts them into the object store; its own copy is dropped."""
    gc.collect()
    mem0, shm0 = smaps(), shm_used()
    t0 = time.perf_counter()
    sets, _ = load_splits(cache, SIZE, VAL_FRACTION, TEST_FRACTION, limits_for(n_train, n_val), 1)
    t1 = time.perf_counter()
    ref = ray.put({split: (s.pixels.numpy(), s.names) for split, s in sets.items()})
    t2 = time.perf_counter()
    nbytes = sum(s.pixels.numel() for s in sets.values())
    del sets
    gc.collect()
    info = {"load_s": t1 - t0, "put_s": t2 - t1, "payload_bytes": nbytes, "store_alloc": plasma_bytes(),
            "shm_grew": shm_used() - shm0,
            "driver_added_after_put": delta(smaps(), mem0)}
    return ref, info


def measure_store(cache: Path, n_train: int, n_val: int, k: int) -> dict[str, Any]:
    ref, driver = driver_put(cache, n_train, n_val)
    actors, _ = start_trials(k)
    try:
        result = run_trials(actors, "get_store", [ref])
    finally:
        stop_trials(actors)
        del ref
        gc.collect()
    return {"way": "store", "images": n_train, "driver": driver, **result}


# ---------------------------------------------------------------------------------------------------------------
# a 2-node loopback cluster of our own


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_under(marker: str) -> list[int]:
    """Processes whose command line names `marker` (our own --temp-dir): the Ray processes we started."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            pids.append(int(d.name))
    return pids


def kill_pids(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [p for p in pids if Path(f"/proc/{p}").exists()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.time() + 10
        while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.2)


def ray_start(args: list[str]) -> None:
    exe = Path(sys.executable).with_name("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([str(exe), "start", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, timeout=180)
    if done.returncode:
        raise RuntimeError(f"ray start {' '.join(args)} failed:\n{done.stderr[-2000:]}")


def measure_two_node(cache: Path, sizes: list[int], n_val: int, k: int, store_bytes: int) -> list[dict[str, Any]]:
    temp = tempfile.mkdtemp(prefix="rdt", dir="/tmp")
    port = free_port()
    common = ["--node-ip-address=127.0.0.1", f"--object-store-memory={store_bytes}", "--disable-usage-stats",
              f"--temp-dir={temp}"]
    results = []
    try:
        ray_start(["--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
                   f"--dashboard-agent-listen-port={free_port()}", *common])
        ray_start([f"--address=127.0.0.1:{port}", f"--num-cpus={k}", '--resources={"far": 100}',
                   f"--dashboard-agent-listen-port={free_port()}", *common])
        ray.init(address=f"127.0.0.1:{port}", log_to_driver=False)
        for n in sizes:
            ref, driver = driver_put(cache, n, n_val)
            actors, info = start_trials(k, {"resources": {"far": 1}})
            try:
                result = run_trials(actors, "get_store", [ref])
                # A trial started after the transfer (a later trial on the same node) finds the object local.
                later, _ = start_trials(1, {"resources": {"far": 1}, "num_cpus": 0})
                t0 = time.perf_counter()
                local = ray.get(later[0].get_store.remote([ref]))
                local["wall_s"] = time.perf_counter() - t0
                stop_trials(later)
            finally:
                stop_trials(actors)
                del ref
                gc.collect()
            results.append({"way": "store, 2 nodes", "images": n, "driver": driver,
                            "trial_nodes": sorted({i["node"][:8] for i in info}), "later_local": local, **result})
            time.sleep(2.0)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        kill_pids(pids_under(temp))
        shutil.rmtree(temp, ignore_errors=True)
    return results


# ---------------------------------------------------------------------------------------------------------------
# report


def mb(x: float | None) -> str:
    return "?" if x is None else f"{x / MB:.0f}"


def table(results: list[dict[str, Any]]) -> str:
    """One line per (images, way): driver and store columns, then per trial times and mean memory added."""
    mem_cols = " ".join(f"{c:>6}" for c in ("+RSS", "+PSS", "+USS", "+anon"))
    head = (f"{'images':>6} {'way':<14} {'drv load':>8} {'drv put':>7} {'store MB':>9} {'ready s':>11} "
            f"{'1st batch s':>11} | loaded: {mem_cols} | touched: {mem_cols}")
    lines = [head, "-" * len(head)]
    for r in results:
        tr, d = r["trials"], r.get("driver")
        spans = []
        for key in ("ready_s", "first_batch_s"):
            vals = [t[key] for t in tr]
            spans.append(f"{min(vals):.2f}-{max(vals):.2f}" if len(vals) > 1 else f"{vals[0]:.2f}")
        mems = []
        for part in ("added", "added_touched"):
            mems.append(" ".join(f"{mb(sum(t[part][k] for t in tr) / len(tr)):>6}"
                                 for k in ("rss", "pss", "uss", "anon")))
        if d:
            store = d["store_alloc"]["shm"] + d["store_alloc"]["fallback"]
            if r["way"].endswith("2 nodes"):
                store_text = f"{mb(store)}+{mb(r['trial_store_alloc']['shm'] + r['trial_store_alloc']['fallback'])}"
            else:
                store_text = mb(store)
            drv = f"{d['load_s']:>8.2f} {d['put_s']:>7.2f} {store_text:>9}"
        else:
            drv = f"{'-':>8} {'-':>7} {'-':>9}"
        lines.append(f"{r['images']:>6} {r['way']:<14} {drv} {spans[0]:>11} {spans[1]:>11} | loaded: {mems[0]} | "
                     f"touched: {mems[1]}")
        if "later_local" in r:
            lo = r["later_local"]
            lines.append(f"{'':>6} {'  later trial':<14} {'':>8} {'':>7} {'':>9} {lo['ready_s']:>11.3f} "
                         f"{lo['first_batch_s']:>11.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", default="1000,20000", help="train image counts, comma-separated (default 1000,20000)")
    p.add_argument("--trials", type=int, default=2, help="trials loading at once (default 2)")
    p.add_argument("--val", type=int, default=64, help="validation images (default 64)")
    p.add_argument("--cache", type=Path, help="prepared cache to read, built there if it holds none (kept)")
    p.add_argument("--keep", action="store_true", help="keep the temporary cache")
    p.add_argument("--two-node", action="store_true", help="also time the store way across a 2-node cluster")
    p.add_argument("--json", type=Path, help="write all measurements here")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.images.split(",") if x.strip()]
    k = args.trials
    need = (max(sizes) + args.val) * 3 * SIZE * SIZE
    print(f"largest set {need / 1e9:.2f} GB; /dev/shm free {shutil.disk_usage('/dev/shm').free / 1e9:.1f} GB; "
          f"/tmp free {shutil.disk_usage('/tmp').free / 1e9:.1f} GB", flush=True)

    temp = None
    cache = args.cache
    if cache is None:
        temp = Path(tempfile.mkdtemp(prefix="data_transport_", dir="/tmp"))
        cache = temp / "cache"
    cache = cache.resolve()
    results: list[dict[str, Any]] = []
    try:
        if not cache_fits(cache, max(sizes), args.val):
            if (cache / META).exists():
                raise SystemExit(f"{cache} holds a cache too small for {max(sizes)} train images; use another --cache")
            print(f"building cache {cache} ...", flush=True)
            print(f"  {build_cache(cache, max(sizes), args.val):.1f} s", flush=True)
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        store_bytes = int(need * 1.15) + 300 * 2**20
        ray.init(address="local", num_cpus=k, include_dashboard=False, object_store_memory=store_bytes,
                 log_to_driver=False)
        try:
            for n in sizes:
                for measure in (measure_shared, measure_store):
                    print(f"{measure.__name__} {n} images, {k} trials ...", flush=True)
                    results.append(measure(cache, n, args.val, k))
                    time.sleep(2.0)
        finally:
            ray.shutdown()
        if args.two_node:
            print("two-node loopback cluster ...", flush=True)
            results += measure_two_node(cache, sizes, args.val, k, store_bytes)
    finally:
        if temp is not None and not args.keep:
            shutil.rmtree(temp, ignore_errors=True)
        elif temp is not None:
            print(f"cache kept: {cache}")

    print(f"\n{k} trials at once, {SIZE} px, + {args.val} val images; ready/1st batch: min-max over trials; "
          "memory: mean added per trial")
    print(table(results))
    for r in results:
        if "driver" in r:
            d, drv = r["driver"], r["driver"]["driver_added_after_put"]
            print(f"{r['images']:>6} {r['way']}: payload {mb(d['payload_bytes'])} MB, store files "
                  f"{mb(d['store_alloc']['shm'])} MB in /dev/shm + {mb(d['store_alloc']['fallback'])} MB on disk, "
                  f"/dev/shm grew {mb(d['shm_grew'])} MB; driver added after put: RSS {mb(drv['rss'])}, "
                  f"USS {mb(drv['uss'])}, own heap {mb(drv['anon'])}, store pages {mb(drv['pss_shmem'])} (PSS) MB")
    if args.json:
        args.json.write_text(json.dumps({"trials": k, "size": SIZE, "val": args.val, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
