"""Image folders as training data: scanning, robust decoding, deterministic splits, in-memory uint8 sets.

Any folder tree of jpg / png / webp / bmp / tiff images of any size and mode is decoded once, converted to RGB,
centre-cropped and resized to a square; unreadable files are skipped and reported, never fatal.
"""

from __future__ import annotations

import hashlib
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from data.cache import SKIPPED, is_cache, load_cache, read_rows
from data.corrupt import Corruption, fixed_mask

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})  # GIF: first frame
MIN_SIDE = 32  # px: a smaller image holds less than one hole; upscaled to 256 it would teach the model blur
DEFAULT_IMAGES = Path(__file__).parent / "default_images"
SPLITS = ("train", "val", "test")
# Validation and test holes are derived from these seeds, so every run is judged on the same holes.
VAL_MASK_SEED = 1234
TEST_MASK_SEED = 4321


class DataError(ValueError):
    """A data problem the user can fix (empty folder, empty split); the message says how."""


# What decoding a bad file raises (PIL's own errors are OSError / SyntaxError subclasses; truncated streams can
# surface as EOFError, struct.error or zlib.error). Anything else is a bug in our code and must propagate,
# never be reported as an "unreadable image".
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, MemoryError,
                 Image.DecompressionBombError)


def scan(root: Path) -> list[Path]:
    """Every image file below `root` (by extension, case-insensitive), sorted, hidden files excluded. A dangling
    symlink is listed too: it fails to open and is reported with the others, instead of vanishing unsaid."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    return sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
        and (p.is_file() or (p.is_symlink() and not p.exists()))
    )


def split_of(key: str, val_fraction: float, test_fraction: float) -> str:
    """The split of one file, from a hash of its relative path: adding files never moves existing ones."""
    u = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2**64
    if u < val_fraction:
        return "val"
    if u < val_fraction + test_fraction:
        return "test"
    return "train"


def assign_splits(keys: list[str], val_fraction: float, test_fraction: float) -> dict[str, list[int]]:
    """Indices of `keys` per split, each split in hash order (a capped subset is not all from one sub-folder)."""
    chosen: dict[str, list[int]] = {s: [] for s in SPLITS}
    for i, key in enumerate(keys):
        chosen[split_of(key, val_fraction, test_fraction)].append(i)
    for idx in chosen.values():
        idx.sort(key=lambda i: hashlib.sha1(keys[i].encode()).digest())
    return chosen


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB from any PIL mode; transparency is flattened onto white (black would look like a hole)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: convert("RGB") would clip; rescale to 8 bits first.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def draft_jpeg(img: Image.Image, size: int) -> None:
    """Have a JPEG decode at the smallest of 1/2, 1/4, 1/8 scale that still leaves its short side >= `size`:
    exact enough before the LANCZOS resize, and 3-6x faster on sources of 2x and more (benchmarks/decode_bench.py).
    The request is the target itself (integer ceilings), so a source of exactly 2x (512 px covers at 256) is
    reduced too. Other formats are left alone."""
    w, h = img.size
    side = min(w, h)
    if img.format == "JPEG" and side >= 2 * size:
        img.draft("RGB", (-(-w * size // side), -(-h * size // side)))


def load_image(path: Path, size: int, min_side: int = 1) -> np.ndarray:
    """Decode one file to a (size, size, 3) uint8 array: EXIF-rotated, RGB, centre square crop, resized.

    Raises OSError / ValueError (and PIL's errors) on unreadable, truncated, empty or too small images
    (short side under `min_side` px).
    """
    with Image.open(path) as img:
        if min(img.size) < max(1, min_side):
            raise ValueError(f"tiny: {img.size[0]}x{img.size[1]} (under {max(1, min_side)} px)")
        draft_jpeg(img, size)
        img.load()  # forces full decode here so truncation raises now, not later
        img = ImageOps.exif_transpose(img)
        img = to_rgb(img)
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.resize((size, size), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))
        return np.asarray(img, dtype=np.uint8).copy()


@dataclass
class LoadReport:
    """What a folder load found, kept and skipped (with the reason for each skipped file)."""

    root: str
    found: int = 0
    loaded: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        kept = ", ".join(f"{k} {v}" for k, v in self.loaded.items())
        text = f"{self.root}: {self.found} image files, kept {kept}; skipped {len(self.skipped)} unreadable"
        return text + f" ({self.seconds:.1f} s)"

    def skipped_lines(self, limit: int = 20) -> list[str]:
        """One line per skipped file with its reason (the first `limit`, then how many more)."""
        lines = [f"skipped {name}: {reason}" for name, reason in self.skipped[:limit]]
        if len(self.skipped) > limit:
            lines.append(f"... and {len(self.skipped) - limit} more")
        return lines


@dataclass
class ImageSet:
    """Images as one uint8 tensor (N, 3, S, S) plus their names; batches come out as float in [0, 1]."""

    pixels: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return self.pixels.shape[0]

    @property
    def size(self) -> int:
        return self.pixels.shape[-1]

    def batch(self, index: torch.Tensor | list[int], device: torch.device | str = "cpu") -> torch.Tensor:
        # Move uint8 (4x fewer bytes) and convert on the device; index_select is ~3x faster than [] on uint8.
        index = torch.as_tensor(index, dtype=torch.long)
        return self.pixels.index_select(0, index).to(device, non_blocking=True).float().div_(255.0)

    def batches(
        self, batch_size: int, device: torch.device | str = "cpu", shuffle: bool = False,
        generator: torch.Generator | None = None, drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(indices, images) batches over the whole set; shuffled with `generator` when asked."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield idx, self.batch(idx, device)


def fixed_masks(corruption: Corruption, seed: int, count: int, size: int) -> torch.Tensor:
    """The fixed masks (count, 1, S, S) for a validation or test set: mask i belongs to image i."""
    if count == 0:
        return torch.zeros(0, 1, size, size)
    return torch.stack([fixed_mask(corruption, seed, i, size) for i in range(count)])


def load_splits(
    root: Path, size: int = 256, val_fraction: float = 0.1, test_fraction: float = 0.1,
    limits: dict[str, int] | None = None, workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, ImageSet], LoadReport]:
    """Decode a folder into train / val / test sets, each file once; bad files are skipped and reported.

    `limits` caps a split's size (e.g. {"train": 1000}); the kept files are a fixed, hash-ordered subset.
    """
    t0 = time.perf_counter()
    root = Path(root).resolve()
    if is_cache(root):
        return _load_cached(root, size, val_fraction, test_fraction, limits, t0)
    files = scan(root)
    report = LoadReport(root=str(root), found=len(files))
    if not files:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) found under {root}")
    keys = [p.relative_to(root).as_posix() for p in files]
    chosen = assign_splits(keys, val_fraction, test_fraction)

    decoded: dict[int, np.ndarray] = {}

    def work(i: int) -> tuple[int, np.ndarray | None, str]:
        try:
            return i, load_image(files[i], size, MIN_SIDE), ""
        except DECODE_ERRORS as exc:  # a bad file means "skip this file", never "stop the run"
            return i, None, f"{type(exc).__name__}: {exc}"

    # A capped split takes the next candidates in hash order when some of its files turn out unreadable.
    wanted = {s: (limits or {}).get(s, len(idx)) for s, idx in chosen.items()}
    tried: set[int] = set()
    done = 0
    # PIL releases the GIL while decoding, so threads scale without pickling images between processes.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        while True:
            todo = []
            for split, idx in chosen.items():
                have = sum(1 for i in idx if i in decoded)
                todo += [i for i in idx if i not in tried][: max(0, wanted[split] - have)]
            if not todo:
                break
            tried.update(todo)
            for i, arr, err in pool.map(work, sorted(todo)):
                done += 1
                if arr is None:
                    report.skipped.append((keys[i], err))
                else:
                    decoded[i] = arr
                if progress is not None:
                    progress(done, max(done, sum(wanted.values())))
    for split, idx in chosen.items():
        chosen[split] = [i for i in idx if i in decoded][: wanted[split]]

    sets = {}
    for split, keep in chosen.items():
        pixels = (
            torch.from_numpy(np.stack([decoded[i] for i in keep])).permute(0, 3, 1, 2).contiguous()
            if keep else torch.zeros(0, 3, size, size, dtype=torch.uint8)
        )
        sets[split] = ImageSet(pixels=pixels, names=[keys[i] for i in keep])
        report.loaded[split] = len(keep)
    report.seconds = time.perf_counter() - t0
    return sets, report


def _load_cached(
    root: Path, size: int, val_fraction: float, test_fraction: float, limits: dict[str, int] | None, t0: float,
) -> tuple[dict[str, ImageSet], LoadReport]:
    """The same splits as the source folder would give, read from a `data.prepare` cache without decoding."""
    pixels, keys, meta = load_cache(root)
    if meta["size"] != size:
        raise DataError(f"the cache {root} holds {meta['size']} px images but {size} px are asked for; "
                        f"prepare one with --size {size}")
    skipped = [(r[0], r[1] if len(r) > 1 else "") for r in read_rows(root / SKIPPED)]
    report = LoadReport(root=str(root), found=len(keys) + len(skipped), skipped=skipped)
    sets = {}
    for split, idx in assign_splits(keys, val_fraction, test_fraction).items():
        if limits and split in limits:
            idx = idx[: limits[split]]
        rows = np.asarray(idx, dtype=np.int64)
        sets[split] = ImageSet(pixels=torch.from_numpy(np.ascontiguousarray(pixels[rows])),
                               names=[keys[i] for i in idx])
        report.loaded[split] = len(idx)
    report.seconds = time.perf_counter() - t0
    return sets, report
