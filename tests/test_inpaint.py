"""`search.inpaint`: any size in and out, known pixels kept, masks from files or a seed, bad files skipped."""

from __future__ import annotations

import numpy as np
from PIL import Image

from search import inpaint


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
    assert "Traceback" not in capsys.readouterr().err
