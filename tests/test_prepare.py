"""`data.prepare`: a uint8 cache that loads like the folder, skips bad files, resumes and is idempotent."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from data import prepare
from data.cache import load_cache
from data.images import DEFAULT_IMAGES, DataError, load_image, load_splits


@pytest.fixture()
def folder(tmp_path):
    src = tmp_path / "src" / "covers"
    src.mkdir(parents=True)
    for p in sorted(DEFAULT_IMAGES.glob("*.jpg"))[:12]:
        shutil.copy(p, src / p.name)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    (src / "empty.png").write_bytes(b"")
    Image.new("RGB", (10, 10)).save(src / "tiny.png")
    return tmp_path / "src"


def test_prepare_skips_bad_files_and_loads_like_the_folder(folder, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert prepare.main([str(folder), "--out", str(cache), "--size", "32", "--workers", "2"]) == 0
    assert "12 images" in capsys.readouterr().out
    skipped = (cache / prepare.SKIPPED).read_text()
    assert "broken.jpg" in skipped and "empty.png" in skipped and "tiny: 10x10" in skipped
    from_cache, report = load_splits(cache, size=32, val_fraction=0.25, test_fraction=0.25)
    from_folder, _ = load_splits(folder, size=32, val_fraction=0.25, test_fraction=0.25)
    assert report.found == 15 and len(report.skipped) == 3
    for split in ("train", "val", "test"):
        assert from_cache[split].names == [n for n in from_folder[split].names if "tiny" not in n]
    # tiny.png is readable, so the folder keeps it; the cache drops it: compare the rest pixel for pixel.
    names = from_cache["train"].names
    folder_px = {n: from_folder["train"].pixels[i] for i, n in enumerate(from_folder["train"].names)}
    assert all(torch.equal(from_cache["train"].pixels[i], folder_px[n]) for i, n in enumerate(names))


def test_rerun_is_idempotent_and_continues_after_an_interruption(folder, tmp_path, capsys):
    cache = tmp_path / "cache"
    prepare.main([str(folder), "--out", str(cache), "--size", "32"])
    assert prepare.main([str(folder), "--out", str(cache), "--size", "32"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    # Simulate a crash mid-chunk: the last index line lost, half a frame of pixels written past the index.
    lines = (cache / prepare.INDEX).read_text().splitlines()
    (cache / prepare.INDEX).write_text("\n".join(lines[:-2]) + "\n")
    with open(cache / prepare.PIXELS, "ab") as fh:
        fh.write(b"\x07" * 1000)
    result = prepare.prepare(folder, cache, size=32)
    assert result["new"] == 2 and result["images"] == 12
    pixels, keys, meta = load_cache(cache)
    assert meta["count"] == 12 and len(set(keys)) == 12
    assert (cache / prepare.PIXELS).stat().st_size == 12 * 3 * 32 * 32
    for row, key in enumerate(keys):
        assert np.array_equal(pixels[row], load_image(folder / key, 32).transpose(2, 0, 1)), key


def test_new_files_are_added_and_sizes_must_match(folder, tmp_path):
    cache = tmp_path / "cache"
    prepare.prepare(folder, cache, size=32)
    shutil.copy(sorted(DEFAULT_IMAGES.glob("*.jpg"))[20], folder / "covers" / "new.jpg")
    assert prepare.prepare(folder, cache, size=32)["new"] == 1
    with pytest.raises(DataError, match="--size 32"):
        prepare.prepare(folder, cache, size=64)
    with pytest.raises(DataError, match="prepare one with --size 64"):
        load_splits(cache, size=64)
