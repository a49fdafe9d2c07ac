"""`search.inpaint`: any size in and out, known pixels kept, masks from files or a seed, bad files skipped."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from search import evaluate, inpaint
from search.core.checkpoint import TRIAL_FILE, CheckpointError, load_checkpoint, load_model, locate


def _inputs(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    odd = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(odd).save(folder / "odd.png")
    Image.fromarray(np.full((64, 64, 4), 200, np.uint8), "RGBA").save(folder / "rgba.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return odd


def test_inpaint_with_seeded_reference_holes(tiny_checkpoint, tmp_path, capsys):
    odd = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    assert inpaint.main(["--model", str(tiny_checkpoint), "--input", str(tmp_path / "in"), "--output", str(out),
                         "--device", "cpu", "--mask-seed", "3"]) == 0
    text = capsys.readouterr().out
    assert "wrote 2 image(s)" in text and "skipped 1" in text and "broken.jpg" in text
    result = np.asarray(Image.open(out / "odd.png"))
    mask = np.asarray(Image.open(out / "odd_mask.png")) > 127
    assert result.shape == odd.shape and mask.shape == odd.shape[:2]
    assert mask.sum() >= 16 * 16  # the checkpoint's own holes: 4 of 16 px
    assert np.array_equal(result[~mask], odd[~mask])  # known pixels are the input's own
    again = tmp_path / "again"
    inpaint.main(["--model", str(tiny_checkpoint), "--input", str(tmp_path / "in"), "--output", str(again),
                  "--device", "cpu", "--mask-seed", "3"])
    assert np.array_equal(np.asarray(Image.open(again / "odd_mask.png")), np.asarray(Image.open(out / "odd_mask.png")))


def test_inpaint_with_mask_files(tiny_checkpoint, tmp_path, capsys):
    odd = _inputs(tmp_path / "in")
    masks = tmp_path / "masks"
    masks.mkdir()
    m = np.zeros((50, 70), np.uint8)
    m[10:30, 20:45] = 255
    Image.fromarray(m).save(masks / "odd.png")
    out = tmp_path / "out"
    assert inpaint.main(["--model", str(tiny_checkpoint), "--input", str(tmp_path / "in"), "--output", str(out),
                         "--masks", str(masks), "--device", "cpu"]) == 0
    result = np.asarray(Image.open(out / "odd.png"))
    assert np.array_equal(result[m == 0], odd[m == 0])
    assert not np.array_equal(result[m > 0], odd[m > 0])
    # rgba.png has no mask file: reported and skipped, not a crash.
    assert "rgba.png" in capsys.readouterr().out and not (out / "rgba.png").exists()


def test_inpaint_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    assert inpaint.main(["--model", str(tmp_path / "missing.pt"), "--input", str(tmp_path / "in"),
                         "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"inpaint: error: checkpoint {tmp_path / 'missing.pt'} does not exist"]


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _bad_checkpoints(folder, tiny_checkpoint):
    folder.mkdir()
    good = tiny_checkpoint.read_bytes()
    (folder / "truncated.pt").write_bytes(good[: len(good) // 2])
    (folder / "text.pt").write_text("model weights, honest\n")
    (folder / "empty.pt").write_bytes(b"")
    torch.save({"model": RunsCode(folder / "PWNED_torch"), "config": {}}, folder / "code_in_torch.pt")
    with open(folder / "code_in_pickle.pt", "wb") as fh:
        pickle.dump(RunsCode(folder / "PWNED_pickle"), fh)
    torch.save({"layer.weight": torch.zeros(3)}, folder / "foreign.pt")  # a bare state dict: not ours
    torch.save({"model": {"w": torch.zeros(1)}, "config": {"model.dpeth": 3}}, folder / "bad_config.pt")
    return {"truncated.pt": "not a readable checkpoint", "text.pt": "not a readable checkpoint",
            "empty.pt": "not a readable checkpoint", "code_in_torch.pt": "could run code, so it is refused",
            "code_in_pickle.pt": "refuses its content", "foreign.pt": "has no model, config",
            "bad_config.pt": "unknown config key(s): model.dpeth"}


def test_unsafe_or_broken_checkpoints_are_refused_and_run_nothing(tiny_checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad"
    expected = _bad_checkpoints(bad, tiny_checkpoint)
    (tmp_path / "in").mkdir()
    Image.new("RGB", (64, 64), "red").save(tmp_path / "in" / "x.png")
    for name, message in expected.items():
        path = bad / name
        assert inpaint.main(["--model", str(path), "--input", str(tmp_path / "in"), "--output",
                             str(tmp_path / "out"), "--device", "cpu"]) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and message in err, (name, err)
        assert evaluate.main(["--model", str(path), "--no-mlflow", "--out", str(tmp_path / "e")]) == 2, name
        assert message in capsys.readouterr().err, name
    assert not list(bad.glob("PWNED*")), "a checkpoint ran code while being loaded"
    assert not (tmp_path / "out").exists() and not (tmp_path / "e").exists()  # nothing written for a bad model


def test_project_checkpoints_load_without_the_full_unpickler(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint, required=("model", "config", "optimizer", "scheduler", "rng", "epoch"))
    assert ckpt["epoch"] == 1 and ckpt["config"]["model.prefill"] == "pyramid"
    assert all(isinstance(v, torch.Tensor) for v in ckpt["model"].values())
    with pytest.raises(CheckpointError, match="it has no nothing"):
        load_checkpoint(tiny_checkpoint, required=("model", "nothing"))


def test_a_trial_checkpoint_is_found_by_file_folder_or_storage_uri(tiny_checkpoint, tmp_path):
    # As a search's storage keeps a trial's final state: <storage>/<study>/<trial>/checkpoint_NNNNNN/checkpoint.pt
    folder = tmp_path / "ray" / "smoke" / "trial_0" / "checkpoint_000002"
    folder.mkdir(parents=True)
    shutil.copy(tiny_checkpoint, folder / TRIAL_FILE)
    assert locate(folder) == folder / TRIAL_FILE and locate(tiny_checkpoint) == tiny_checkpoint
    fetched = locate(folder.as_uri())  # file://...: read through pyarrow, as s3:// would be
    assert fetched != folder / TRIAL_FILE and fetched.read_bytes() == tiny_checkpoint.read_bytes()
    reference, _ = load_model(tiny_checkpoint)
    for where in (folder, folder.as_uri()):
        model, cfg = load_model(where)
        assert cfg.model.prefill == "pyramid"
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values(),
                                                      strict=True))
    with pytest.raises(CheckpointError, match="does not exist"):
        locate((tmp_path / "nowhere").as_uri())
