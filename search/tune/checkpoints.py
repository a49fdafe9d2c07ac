"""Trial checkpoints in the run's storage, through Ray Tune's checkpoint API, so a trial restarted on any node
continues from its last epoch.

The storage is `--storage-path`: a local or NFS folder, or a pyarrow URI (`s3://bucket/prefix`, `gs://...`). A trial
reports one checkpoint folder per epoch (`checkpoint.pt` plus `epoch.json`); Tune copies it into
`<storage>/<study>/<trial>/checkpoint_NNNNNN` and keeps only the latest (`CheckpointConfig(num_to_keep=1)`).

Why `repair_before_restore` exists: Ray 2.60 deletes a trial's previous checkpoint as soon as it registers the new
one, but writes the experiment snapshot (which names the checkpoint each trial restores from) only every ~10 s. A
driver killed in between leaves a snapshot that names a deleted folder, and `Tuner.restore` then fails that trial
("Could not recover from checkpoint as it does not exist on storage anymore"); keeping 2 does not close the window.
Before a restore, the newest surviving checkpoint of each trial (by the epoch written inside it, never by folder
name) is moved to the path the snapshot names. No Ray import at module level beyond Tune's public API.
"""

from __future__ import annotations

import atexit
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from ray import tune

from search.core import faults
from search.core.checkpoint import TRIAL_FILE, CheckpointError, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)
META = "epoch.json"  # beside TRIAL_FILE: the epoch, read without loading the checkpoint
_staging: list[Path] = []  # this process's staging folder (reused actors write every trial's epochs through it)


def fs_and_path(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and path of a local path or a storage URI."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).resolve())
    return pafs.FileSystem.from_uri(uri)


def uri_of(fs: pafs.FileSystem, path: str) -> str:
    """A string that `fs_and_path` turns back into (fs, path): the plain path for local storage."""
    return path if fs.type_name == "local" else f"{fs.type_name}://{path}"


def stage(ckpt: dict[str, Any]) -> tune.Checkpoint:
    """Write one epoch's state into this process's staging folder, for `tune.report(checkpoint=...)`: Tune uploads
    it into the storage before `report` returns, so the folder is overwritten by the next epoch."""
    if not _staging:
        _staging.append(Path(tempfile.mkdtemp(prefix="inpaint-ckpt-")))
        atexit.register(cleanup_staging)
    folder = _staging[0]
    save_checkpoint(ckpt, folder / TRIAL_FILE)
    faults.hit("checkpoint_write")
    (folder / META).write_text(json.dumps({"epoch": int(ckpt["epoch"])}))
    return tune.Checkpoint.from_directory(str(folder))


def restored(required: tuple[str, ...]) -> tuple[dict[str, Any] | None, str]:
    """The checkpoint Tune restored this trial with (from any node's storage), or None on a first start; and a
    warning when there was one that cannot be read (truncated, corrupt): the trial then starts over instead of
    failing (only the latest state is kept, so there is no earlier one to fall back to)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None, ""
    with checkpoint.as_directory() as folder:
        try:
            return load_checkpoint(Path(folder) / TRIAL_FILE, required=required), ""
        except CheckpointError as exc:
            warning = f"its checkpoint could not be used ({exc}); the trial started over from epoch 0"
            log.warning(warning)
            return None, warning


def _epoch(fs: pafs.FileSystem, folder: str) -> int:
    try:
        with fs.open_input_stream(f"{folder}/{META}") as f:
            return int(json.loads(f.read())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1  # half-written or foreign: never chosen over a readable one


def _checkpoints(fs: pafs.FileSystem, trial_dir: str) -> list[str]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
    except OSError:
        return []
    return [i.path for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")]


def delete_trial_checkpoints(fs: pafs.FileSystem, trial_dir: str) -> int:
    """Remove every checkpoint folder of one trial (a pruned or failed one); returns how many."""
    found = _checkpoints(fs, trial_dir)
    for path in found:
        fs.delete_dir(path)
    return len(found)


def _snapshot(fs: pafs.FileSystem, exp_dir: str, changed: list[str]) -> dict[str, Any] | None:
    """Tune's newest readable experiment snapshot. A newer one cut short (a full disk, a kill mid-write) is moved
    aside, since Tune would choose it (the newest by name) and fail on it."""
    infos = fs.get_file_info(pafs.FileSelector(exp_dir, allow_not_found=True))
    snaps = [i for i in infos if i.base_name.startswith("experiment_state") and i.base_name.endswith(".json")]
    for info in sorted(snaps, key=lambda i: i.base_name, reverse=True):  # as Tune chooses: the time in the name
        try:
            with fs.open_input_stream(info.path) as f:
                return json.loads(f.read())
        except (OSError, ValueError) as exc:
            fs.move(info.path, info.path + ".unreadable")
            changed.append(f"{info.base_name}: unreadable ({type(exc).__name__}), set aside; an earlier one is used")
    return None


def repair_before_restore(exp_uri: str) -> list[str]:
    """Make every checkpoint that Tune's snapshot names exist, holding the trial's newest surviving state; returns
    a line per trial changed. See the module docstring for the Ray behaviour this answers."""
    # Private (Tune has no public reader of its snapshot): tests/test_checkpoints.py runs it on a real Tune run.
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    fs, exp_dir = fs_and_path(exp_uri)
    changed: list[str] = []
    state = _snapshot(fs, exp_dir, changed)
    for _, runtime in (state or {}).get("trial_data", []):
        manager = _TrainingRunMetadata.from_json_state(runtime).checkpoint_manager
        latest = manager.latest_checkpoint_result if manager else None
        if latest is None:
            continue
        named = latest.checkpoint.path
        trial_dir = named.rsplit("/", 1)[0]
        found = {p: _epoch(fs, p) for p in _checkpoints(fs, trial_dir)}
        if not found:
            continue  # nothing survived: Tune's own error names the trial
        newest = max(found, key=lambda p: (found[p], p == named))
        if newest != named:
            why = "older" if named in found else "gone"
            if named in found:
                fs.delete_dir(named)
            fs.move(newest, named)
            changed.append(f"{trial_dir.rsplit('/', 1)[-1]}: continues from epoch {found[newest]} (the snapshot "
                           f"named {named.rsplit('/', 1)[-1]}, {why})")
        for path in found:
            if path not in (newest, named):
                fs.delete_dir(path)
    return changed


def cleanup_staging() -> None:
    """Remove this process's staging folder (at exit of a worker that wrote checkpoints)."""
    for folder in _staging:
        shutil.rmtree(folder, ignore_errors=True)
    _staging.clear()
