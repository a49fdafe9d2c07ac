"""Trial checkpoints through Ray Tune's API: the snapshot/checkpoint race of Ray 2.60 reproduced on a real Tune run,
and `repair_before_restore` closing it (newest surviving state by the epoch inside, never by folder name)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import ray
from ray import tune

from search.tune.checkpoints import META, repair_before_restore, restored, stage

pytestmark = pytest.mark.slow


def counting(config: dict) -> None:
    """Four epochs, a checkpoint each; the first attempt dies after epoch 2 (as a lost node would)."""
    ckpt, _ = restored(required=("epoch",))
    start = int(ckpt["epoch"]) if ckpt else 0
    for epoch in range(start + 1, 5):
        marker = Path(config["marker"])
        if epoch == 3 and not marker.exists():
            marker.write_text("died once")
            raise RuntimeError("the first attempt dies before epoch 3")
        tune.report({"epoch": epoch, "start": start}, checkpoint=stage({"epoch": epoch}))



@pytest.fixture
def errored_run(tmp_path):
    """A Tune run (num_to_keep=1) whose one trial errored after checkpointing epoch 2."""
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import a test module
    try:
        tuner = tune.Tuner(counting, param_space={"marker": str(tmp_path / "marker")},
                           run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path / "store"), verbose=0,
                                                     checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
        grid = tuner.fit()
        assert grid.num_errors == 1
        yield tmp_path / "store" / "exp"
    finally:
        ray.shutdown()


def _restore(exp: Path) -> tune.ResultGrid:
    return tune.Tuner.restore(str(exp), trainable=counting, resume_errored=True).fit()


def test_a_snapshot_naming_a_deleted_checkpoint_is_repaired_to_the_newest_state(errored_run):
    exp = errored_run
    [trial_dir] = [p for p in exp.iterdir() if p.is_dir()]
    [named] = list(trial_dir.glob("checkpoint_*"))  # num_to_keep=1: only epoch 2's remains, and the snapshot names it
    assert json.loads((named / META).read_text()) == {"epoch": 2}
    # The race: Tune registered a newer checkpoint and deleted the one the (older) snapshot names. A stale folder
    # with a higher number but an older epoch lies beside it.
    newer = trial_dir / "checkpoint_000002"
    shutil.move(named, newer)
    stale = trial_dir / "checkpoint_000009"
    shutil.copytree(newer, stale)
    (stale / META).write_text(json.dumps({"epoch": 1}))
    saved = exp.parent / "saved"
    shutil.copytree(exp, saved)

    # Unrepaired, Tune cannot restore the trial: the error the project used to meet.
    grid = _restore(exp)
    assert grid.num_errors == 1 and "does not exist on storage" in str(grid.errors[0])

    shutil.rmtree(exp)
    shutil.copytree(saved, exp)
    changed = repair_before_restore(str(exp))
    assert len(changed) == 1 and "continues from epoch 2" in changed[0]
    assert [p.name for p in trial_dir.glob("checkpoint_*")] == [named.name]  # newest moved there, stale removed
    grid = _restore(exp)
    assert grid.num_errors == 0
    result = grid[0].metrics
    assert result["epoch"] == 4 and result["start"] == 2  # continued after epoch 2, not from the start
    assert repair_before_restore(str(exp)) == []  # nothing left to repair
