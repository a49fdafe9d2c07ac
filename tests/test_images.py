"""Image folders: every mode converted correctly, bad files skipped and counted, stable deterministic splits."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.images import DEFAULT_IMAGES, DataError, load_image, load_splits, scan, split_of

RED, BLUE = (220, 20, 20), (20, 20, 220)


def _halves(w: int, h: int) -> Image.Image:
    """Left half red, right half blue."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2], arr[:, w // 2 :] = RED, BLUE
    return Image.fromarray(arr)


def _close(pixel, colour, tol=30) -> bool:
    return all(abs(int(a) - b) <= tol for a, b in zip(pixel, colour, strict=True))


@pytest.fixture()
def zoo(tmp_path: Path) -> Path:
    """A folder of awkward but valid images plus four broken files, in nested sub-folders."""
    good = tmp_path / "good" / "nested"
    good.mkdir(parents=True)
    _halves(120, 80).save(good / "wide.jpg", quality=95)
    _halves(40, 90).save(good / "tall.png")
    _halves(50, 50).save(good / "small.webp", lossless=True)
    Image.new("RGB", (64, 64), RED).convert("CMYK").save(good / "cmyk.jpg", quality=95)
    Image.new("L", (64, 64), 200).save(good / "grey.png")
    Image.fromarray(np.full((64, 64), 65535, np.uint16)).save(good / "grey16.png")
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))  # fully transparent black
    rgba.save(good / "transparent.png")
    pal = Image.new("P", (64, 64), 0)
    pal.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    pal.info["transparency"] = 0
    pal.save(good / "palette.png", transparency=0)
    # Stored left red / right blue; EXIF orientation 6 means "rotate 90 degrees clockwise to display".
    exif = Image.Exif()
    exif[0x0112] = 6
    _halves(90, 60).save(good / "rotated.jpg", exif=exif, quality=95)
    bad = tmp_path / "bad"
    bad.mkdir()
    full = (good / "wide.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (bad / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.webp").write_text("not an image")
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    return tmp_path


def test_scan_finds_images_by_extension(zoo):
    names = {p.name for p in scan(zoo)}
    assert "notes.txt" not in names
    assert len(names) == 13


def test_bad_files_are_skipped_and_counted(zoo):
    sets, report = load_splits(zoo, size=32, val_fraction=0.0, test_fraction=0.0)
    assert report.found == 13
    assert report.loaded["train"] == 9
    skipped = {Path(p).name for p, _ in report.skipped}
    assert skipped == {"truncated.jpg", "noise.jpg", "empty.png", "text.webp"}
    assert all(reason for _, reason in report.skipped)
    assert sets["train"].pixels.shape == (9, 3, 32, 32)
    assert "skipped 4" in report.summary()


def test_modes_convert_to_rgb_correctly(zoo):
    g = zoo / "good" / "nested"
    assert _close(load_image(g / "cmyk.jpg", 32)[16, 16], RED)
    assert _close(load_image(g / "grey.png", 32)[16, 16], (200, 200, 200), 2)
    assert _close(load_image(g / "grey16.png", 32)[16, 16], (255, 255, 255), 1)
    # Transparency is flattened on white: black would read as a hole.
    assert _close(load_image(g / "transparent.png", 32)[16, 16], (255, 255, 255), 1)
    assert _close(load_image(g / "palette.png", 32)[16, 16], (255, 255, 255), 1)


def test_centre_crop_keeps_the_middle(zoo):
    wide = load_image(zoo / "good" / "nested" / "wide.jpg", 32)
    assert wide.shape == (32, 32, 3) and wide.dtype == np.uint8
    assert _close(wide[16, 2], RED) and _close(wide[16, 29], BLUE)
    tall = load_image(zoo / "good" / "nested" / "tall.png", 32)
    assert _close(tall[16, 2], RED) and _close(tall[16, 29], BLUE)


def test_exif_orientation_is_applied(zoo):
    img = load_image(zoo / "good" / "nested" / "rotated.jpg", 32)
    # Rotated 90 degrees clockwise, the stored left (red) half is on top.
    assert _close(img[2, 16], RED) and _close(img[29, 16], BLUE)


def test_large_jpeg_reduced_decode_matches_full_decode(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (16, 16, 3)), np.ones((64, 64, 1))).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "big.jpg", quality=95)
    fast = load_image(tmp_path / "big.jpg", 64).astype(float)
    with Image.open(tmp_path / "big.jpg") as im:
        slow = np.asarray(im.convert("RGB").resize((64, 64), Image.Resampling.LANCZOS), dtype=float)
    assert np.abs(fast - slow).mean() < 3.0


def test_splits_are_deterministic_and_stable_when_files_are_added(tmp_path):
    src = sorted(DEFAULT_IMAGES.glob("*.jpg"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in src[:30]:
        shutil.copy(p, folder / p.name)
    a, _ = load_splits(folder, size=16, val_fraction=0.2, test_fraction=0.2)
    b, _ = load_splits(folder, size=16, val_fraction=0.2, test_fraction=0.2)
    assert all(a[s].names == b[s].names for s in a)
    assert sum(len(s) for s in a.values()) == 30
    assert len(a["val"]) > 0 and len(a["test"]) > 0
    for p in src[30:]:
        shutil.copy(p, folder / p.name)
    c, _ = load_splits(folder, size=16, val_fraction=0.2, test_fraction=0.2)
    for split in a:
        assert set(a[split].names) <= set(c[split].names)
    assert split_of("x/y.jpg", 0.1, 0.1) == split_of("x/y.jpg", 0.1, 0.1)


def test_split_limits_cap_size(tmp_path):
    sets, report = load_splits(DEFAULT_IMAGES, size=16, val_fraction=0.0, test_fraction=0.0, limits={"train": 5})
    assert len(sets["train"]) == 5 and report.loaded["train"] == 5


def test_embedded_default_images_ship_with_licences():
    assert len(scan(DEFAULT_IMAGES)) == 41
    manifest = (DEFAULT_IMAGES / "MANIFEST.md").read_text()
    assert "CC-BY-4.0" in manifest and "Aitzol Berasategi" in manifest


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no images"):
        load_splits(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_splits(tmp_path / "missing")


def test_batches_are_float_in_unit_range(small_images):
    idx, batch = next(small_images.batches(4))
    assert batch.shape == (4, 3, 64, 64) and batch.dtype.is_floating_point
    assert batch.min() >= 0.0 and batch.max() <= 1.0 and batch.std() > 0.05


def test_capped_split_refills_past_unreadable_files(zoo):
    # 9 readable files and 4 broken ones: asking for 9 must skip the broken ones and still return 9.
    sets, report = load_splits(zoo, size=16, val_fraction=0.0, test_fraction=0.0, limits={"train": 9})
    assert len(sets["train"]) == 9 and len(report.skipped) == 4
    sets, report = load_splits(zoo, size=16, val_fraction=0.0, test_fraction=0.0, limits={"train": 3})
    assert len(sets["train"]) == 3
