"""A full disk while the prepare cache or a retrain checkpoint is written: one clear line, nothing corrupt, and the
same command continues once space is freed. The disk is a size-limited tmpfs (mounting one needs root)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from data.images import DEFAULT_IMAGES
from search.core.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


class SmallDisk:
    def __init__(self, path: Path):
        self.path = path

    def resize(self, size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)


@pytest.fixture
def small_disk() -> Iterator[SmallDisk]:
    """A tmpfs of 64 KiB (resize() it), unmounted at the end; skipped where mounting is not allowed."""
    path = Path(tempfile.mkdtemp(prefix="inpaint-small-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)], capture_output=True,
                             text=True)
    if mounted.returncode:
        path.rmdir()
        pytest.skip(f"cannot mount a size-limited tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        shutil.rmtree(path, ignore_errors=True)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600)


def test_prepare_on_a_full_disk_stops_cleanly_and_continues_after(tmp_path, small_disk):
    reference = tmp_path / "reference"
    assert _run("data.prepare", str(DEFAULT_IMAGES), "--out", str(reference), "--size", "64").returncode == 0
    small_disk.resize(256 * 1024)  # 41 images at 64 px take 504 KB
    cache = small_disk.path / "cache"
    full = _run("data.prepare", str(DEFAULT_IMAGES), "--out", str(cache), "--size", "64")
    assert full.returncode == 2
    [line] = full.stderr.strip().splitlines()[-1:]
    assert "No space left on device" in line and "run the same command again" in line
    assert not (cache / "meta.json").exists()  # not a cache anyone would read yet

    small_disk.resize(4 * 1024 * 1024)
    again = _run("data.prepare", str(DEFAULT_IMAGES), "--out", str(cache), "--size", "64")
    assert again.returncode == 0, again.stderr
    for name in ("pixels.u8", "index.tsv", "skipped.tsv"):
        assert (cache / name).read_bytes() == (reference / name).read_bytes(), name
    assert json.loads((cache / "meta.json").read_text())["count"] == 41


DIST = {"model.width": IntDistribution(4, 8), "model.upsample": CategoricalDistribution(["transpose", "bilinear"]),
        "optim.lr": FloatDistribution(1e-4, 1e-2, log=True), "sched.kind": CategoricalDistribution(["constant"])}


def test_a_retrain_whose_checkpoint_meets_a_full_disk_continues_after(tmp_path, small_disk):
    results = tmp_path / "results"
    results.mkdir()
    study = optuna.create_study(study_name="smoke", storage=f"sqlite:///{results / 'optuna.db'}",
                                direction="maximize")
    params = {"model.width": 8, "model.upsample": "bilinear", "optim.lr": 2e-3, "sched.kind": "constant"}
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=14.0, params=params, distributions=DIST,
                                 intermediate_values={1: 13.0, 2: 13.5, 3: 14.0}))
    args = ["search.retrain_best", "--study", "smoke", "--results", str(results), "--images", "12",
            "--eval-images", "4", "--no-register"]
    ref = _run(*args, "--epochs", "1", "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    size = (tmp_path / "ref" / "checkpoint.pt").stat().st_size
    # Room for one checkpoint, not for the next one written beside it before it replaces it.
    small_disk.resize((int(size * 1.5) // 4096 + 1) * 4096)
    out = small_disk.path / "best"
    full = _run(*args, "--epochs", "3", "--out", str(out))
    assert full.returncode == 2, full.stdout + full.stderr
    line = full.stderr.strip().splitlines()[-1]
    assert "No space left on device" in line and "run the same command again" in line
    assert load_checkpoint(out / "checkpoint.pt", required=("model", "epoch"))["epoch"] == 1
    assert not list(out.glob("*.tmp"))

    small_disk.resize(64 * 1024 * 1024)
    again = _run(*args, "--epochs", "3", "--out", str(out))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming after epoch 1" in again.stdout
    assert load_checkpoint(out / "model.pt", required=("model", "config"))["config"]["train.epochs"] == 3


SEARCH = '''
"""Test study: every trial to the full budget, checkpoints of ~200 KB."""
from search.tune.study import Budget, Study

def space(trial):
    trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)

STUDY = Study(
    name="full", description="", space=space, asha=None,
    fixed={"model.depth": 2, "model.width": 8, "train.batch_size": 4, "loss.w_perceptual": 0.0,
           "train.precision": "fp32", "data.workers": 1},
    budget=Budget(trials=4, epochs=3, train_images=8, val_images=4, image_size=64, steps_per_epoch=4,
                  max_concurrent=2, val_fraction=0.2, test_fraction=0.2),
)
'''


def test_a_search_whose_checkpoint_storage_fills_up_stops_as_interrupted(tmp_path, small_disk):
    """Stopped as Ctrl-C stops it (exit 130, said, the --resume command given), no trial failed for it. (The resume
    after freeing space is not asserted yet: when the disk also cut Tune's newest snapshot short, the resumed
    search can end with trials unfinished; see the stop notes of issue 14.)"""
    (tmp_path / "full.py").write_text(SEARCH)
    results = tmp_path / "results"
    small_disk.resize(640 * 1024)  # Tune's files and three checkpoints; four trials keep four final ones
    args = ["search.run", "--study", str(tmp_path / "full.py"), "--results", str(results), "--storage-path",
            str(small_disk.path / "ray")]
    full = _run(*args)
    text = full.stdout + full.stderr
    assert full.returncode == 130, text[-3000:]
    assert "a disk is full" in text and "--resume" in text
    assert "Traceback" not in text
    storage = f"sqlite:///{results / 'optuna.db'}"
    assert not [t for t in optuna.load_study(study_name="full", storage=storage).get_trials()
                if t.state == TrialState.FAIL]  # stopped, not failed

