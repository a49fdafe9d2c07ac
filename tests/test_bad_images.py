"""Bad images of every kind, through every command that reads images: data.prepare, search.run --data,
retrain_best --data, evaluate and inpaint each skip what cannot be used, name it with its reason, and go on; the
awkward but valid ones are used; nothing is half-written."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.images import DEFAULT_IMAGES, split_of

pytestmark = pytest.mark.slow


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _halves(w: int, h: int) -> Image.Image:
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2], arr[:, w // 2:] = (220, 20, 20), (20, 20, 220)
    return Image.fromarray(arr)


def build_zoo(root: Path) -> tuple[set[str], set[str]]:
    """20 real photos, 7 awkward but valid files and the bad kinds; returns (usable names, bad names)."""
    root.mkdir()
    good = set()
    for src in sorted(DEFAULT_IMAGES.glob("*.jpg"))[:20]:
        shutil.copy(src, root / src.name)
        good.add(src.name)
    _halves(96, 64).save(root / "png_named.jpg", format="PNG")  # a PNG with a .jpg name
    Image.new("L", (64, 64), 120).save(root / "grey.jpg")
    Image.fromarray(np.full((64, 64), 40000, np.uint16)).save(root / "grey16.png")
    _halves(64, 64).convert("CMYK").save(root / "cmyk.jpg")
    pal = Image.new("P", (64, 64), 1)
    pal.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    pal.save(root / "palette_transparent.png", transparency=0)
    frames = [Image.new("RGB", (64, 64), c) for c in ((200, 0, 0), (0, 200, 0))]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display
    _halves(96, 64).save(root / "exif_rotated.jpg", exif=exif)
    good |= {"png_named.jpg", "grey.jpg", "grey16.png", "cmyk.jpg", "palette_transparent.png", "animated.gif",
             "exif_rotated.jpg"}

    jpeg = (root / "exif_rotated.jpg").read_bytes()
    png = (root / "grey16.png").read_bytes()
    (root / "zero_bytes.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "truncated.png").write_bytes(png[: len(png) // 2])
    (root / "text.jpg").write_text("this is not an image\n")
    (root / "noise.png").write_bytes(np.random.default_rng(0).bytes(3000))
    Image.new("RGB", (1, 1), (9, 9, 9)).save(root / "one_pixel.png")
    _halves(8, 8).save(root / "tiny_8px.jpg")
    bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)) \
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + _png_chunk(b"IEND", b"")
    (root / "bomb_100000px.png").write_bytes(bomb)  # the header claims 10^10 pixels
    (root / "dangling.jpg").symlink_to(root / "gone.jpg")
    bad = {"zero_bytes.jpg", "truncated.jpg", "truncated.png", "text.jpg", "noise.png", "one_pixel.png",
           "tiny_8px.jpg", "bomb_100000px.png", "dangling.jpg"}
    if os.geteuid() != 0:  # root reads any file whatever its mode
        shutil.copy(DEFAULT_IMAGES / sorted(good)[0], root / "unreadable.jpg")
        (root / "unreadable.jpg").chmod(0)
        bad.add("unreadable.jpg")
    return good, bad


STUDY = '''
"""Test study: reads a real folder with --data."""
from search.tune.study import Budget, Study

def space(trial):
    trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)

STUDY = Study(
    name="zoo", description="", space=space, asha=None,
    fixed={"model.depth": 2, "model.width": 8, "train.batch_size": 4, "loss.w_perceptual": 0.0,
           "train.precision": "fp32", "data.workers": 2},
    budget=Budget(trials=2, epochs=1, train_images=0, val_images=50, image_size=64, steps_per_epoch=2,
                  val_fraction=0.2, test_fraction=0.2, max_concurrent=1),
)
'''


def _run(*args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout + done.stderr


def _names_skipped(text: str) -> set[str]:
    return {line.split("skipped ", 1)[1].split(":", 1)[0].split("/")[-1] for line in text.splitlines()
            if "skipped " in line and ":" in line.split("skipped ", 1)[1]}


def test_every_command_skips_and_names_bad_images_and_uses_the_rest(tmp_path):
    zoo = tmp_path / "zoo"
    good, bad = build_zoo(zoo)
    assert len(good - {p.name for p in DEFAULT_IMAGES.glob("*.jpg")}) + len(bad) >= 12 + 4  # kinds, not copies

    # data.prepare: every bad file in skipped.tsv with a reason, every usable one in the cache.
    cache = tmp_path / "cache"
    out = _run("data.prepare", str(zoo), "--out", str(cache), "--size", "64", cwd=tmp_path)
    listed = dict(line.split("\t", 1) for line in (cache / "skipped.tsv").read_text().splitlines() if line)
    assert set(listed) == bad and all(reason.strip() for reason in listed.values())
    assert "tiny" in listed["one_pixel.png"] and "DecompressionBomb" in listed["bomb_100000px.png"]
    assert f"{len(bad)} skipped" in out
    assert json.loads((cache / "meta.json").read_text())["count"] == len(good)  # the awkward ones are used
    assert not list(cache.rglob("*.tmp"))

    # search.run --data reads the train and validation splits: each bad file there named, the rest used.
    split = {name: split_of(name, 0.2, 0.2) for name in good | bad}
    (tmp_path / "zoo_study.py").write_text(STUDY)
    results = tmp_path / "results"
    out = _run("search.run", "--study", str(tmp_path / "zoo_study.py"), "--data", str(zoo), "--results",
               str(results), cwd=tmp_path)
    assert _names_skipped(out) == {n for n in bad if split[n] != "test"}
    kept = {s: sum(split[n] == s for n in good) for s in ("train", "val")}
    assert f"kept train {kept['train']}, val {kept['val']}, test 0;" in out
    assert "COMPLETE" in out

    # retrain_best --data: its training sets and its test evaluation both skip and name.
    out = _run("search.retrain_best", "--study", str(tmp_path / "zoo_study.py"), "--results", str(results),
               "--data", str(zoo), "--images", "100", "--epochs", "1", "--eval-images", "100", "--no-register",
               cwd=tmp_path)
    assert _names_skipped(out) == bad  # train and validation while loading, test while evaluating
    model = results / "best" / "zoo" / "model.pt"
    assert model.exists()

    # evaluate --data: the test split of the model's config; its bad files are named.
    out = _run("search.evaluate", "--model", str(model), "--data", str(zoo), "--images", "50", "--no-mlflow",
               "--results", str(results), cwd=tmp_path)
    assert _names_skipped(out) == {n for n in bad if split[n] == "test"}

    # inpaint: every file is read; the bad ones named, an output for each usable one, nothing half-written.
    repaired = tmp_path / "repaired"
    out = _run("search.inpaint", "--model", str(model), "--input", str(zoo), "--output", str(repaired), cwd=tmp_path)
    assert _names_skipped(out) == bad
    outputs = {p.name for p in repaired.iterdir() if not p.name.endswith("_mask.png")}
    assert outputs == {Path(n).with_suffix(".png").name for n in good}
    assert not list(repaired.rglob("*.tmp"))
