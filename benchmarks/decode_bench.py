"""Decode speed: the project's PIL path (data.images.load_image) against torchvision.io, on JPEG folders.

    python benchmarks/decode_bench.py DIR... [--size 256] [--repeats 3] [--limit N] [--workers 4]

    e.g. python benchmarks/make_jpeg_folder.py ../shared/data/imagenet-sample-images --out /tmp/jpeg512
         python benchmarks/decode_bench.py ../shared/data/imagenet-sample-images /tmp/jpeg512

Single thread (torch.set_num_threads(1); PIL decodes on the calling thread), files read from the page cache, every
path producing the same (size, size, 3) uint8 array from the file's path. Per folder it prints images/s for:

    pil               data.images.load_image: PIL with draft() (JPEG decoded at 1/2, 1/4, 1/8 scale while that still
                      leaves the target size), EXIF transpose, RGB, centre crop, LANCZOS resize
    tv_jpeg           file bytes -> torchvision.io.decode_jpeg (RGB, EXIF applied), centre crop, antialiased
                      bilinear resize (torchvision's uint8 fast path)
    tv_jpeg_bicubic   the same with antialiased bicubic (closer to LANCZOS)
    tv_image          file bytes -> torchvision.io.decode_image (format sniffed), then as tv_jpeg
and the decode-only rates (no crop, no resize) of PIL (with draft) and decode_jpeg, to show where the time goes.
Quality: the mean absolute difference (0-255 scale) between each other path's output and the pil output.
Each rate is the best of --repeats passes, the variants interleaved so background load hits them alike.
With --workers N, pil and tv_jpeg_bicubic are also timed through a ThreadPoolExecutor(N), as load_splits runs them.
Files that any path fails to decode (e.g. make_jpeg_folder's corrupt/ files) are left out and counted.
What this does not measure: format coverage (CMYK, 16-bit, palette/alpha, PNG/WEBP/BMP/TIFF), which load_image
handles through PIL and torchvision.io only partly.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.images import DECODE_ERRORS, draft_jpeg, load_image  # noqa: E402

JPEG_EXTS = {".jpg", ".jpeg"}


def _bytes(path: Path) -> torch.Tensor:
    # The file read is part of every path's cost (PIL opens the file itself), so it is timed here too.
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)


def _crop_resize(img: torch.Tensor, size: int, mode: InterpolationMode) -> np.ndarray:
    """(3, H, W) uint8 -> centre square crop -> (size, size, 3) uint8, as load_image does with PIL."""
    h, w = img.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = img[:, top : top + side, left : left + side]
    img = tvf.resize(img, [size, size], interpolation=mode, antialias=True)
    return img.permute(1, 2, 0).numpy().copy()


def tv_jpeg(path: Path, size: int, mode: InterpolationMode = InterpolationMode.BILINEAR) -> np.ndarray:
    img = decode_jpeg(_bytes(path), mode=ImageReadMode.RGB, apply_exif_orientation=True)
    return _crop_resize(img, size, mode)


def tv_image(path: Path, size: int) -> np.ndarray:
    img = decode_image(_bytes(path), mode=ImageReadMode.RGB, apply_exif_orientation=True)
    return _crop_resize(img, size, InterpolationMode.BILINEAR)


def pil_decode_only(path: Path, size: int) -> tuple[int, int]:
    # load_image's decode step alone: the same draft() rule, then a full load.
    with Image.open(path) as img:
        draft_jpeg(img, size)
        img.load()
        return img.size


def tv_decode_only(path: Path, size: int) -> tuple[int, ...]:
    return tuple(decode_jpeg(_bytes(path), mode=ImageReadMode.RGB, apply_exif_orientation=True).shape)


PATHS: dict[str, Callable[[Path, int], object]] = {
    "pil": load_image,
    "tv_jpeg": tv_jpeg,
    "tv_jpeg_bicubic": lambda p, s: tv_jpeg(p, s, InterpolationMode.BICUBIC),
    "tv_image": tv_image,
    "pil_decode_only": pil_decode_only,
    "tv_decode_only": tv_decode_only,
}
COMPARED = ("tv_jpeg", "tv_jpeg_bicubic", "tv_image")
THREADED = ("pil", "tv_jpeg_bicubic")


def bench(folder: Path, size: int, repeats: int, limit: int | None, workers: int) -> None:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in JPEG_EXTS and p.is_file())[:limit]
    # Untimed pass: warms the page cache, drops files any path cannot decode, and measures the pixel differences.
    usable, failed = [], 0
    diffs: dict[str, list[float]] = {name: [] for name in COMPARED}
    shapes: set[tuple[int, ...]] = set()
    for path in files:
        try:
            out = {name: PATHS[name](path, size) for name in ("pil", *COMPARED)}
        except (*DECODE_ERRORS, RuntimeError):  # torchvision.io reports bad data as RuntimeError
            failed += 1
            continue
        usable.append(path)
        shapes.update(np.shape(a) for a in out.values())
        for name in COMPARED:
            diffs[name].append(float(np.abs(out[name].astype(np.int16) - out["pil"].astype(np.int16)).mean()))
    with Image.open(usable[0]) as first:
        source = f"{first.size[0]}x{first.size[1]}"
    print(f"\n{folder}: {len(usable)} JPEGs (first {source}), {failed} left out as undecodable; target {size} px, "
          f"outputs {sorted(shapes)}; best of {repeats} passes, 1 thread")
    best = dict.fromkeys(PATHS, float("inf"))
    for _ in range(repeats):
        for name, fn in PATHS.items():
            t0 = time.perf_counter()
            for path in usable:
                fn(path, size)
            best[name] = min(best[name], time.perf_counter() - t0)
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in range(repeats):
                for name in THREADED:
                    t0 = time.perf_counter()
                    list(pool.map(lambda p, fn=PATHS[name]: fn(p, size), usable))
                    key = f"{name} x{workers} threads"
                    best[key] = min(best.get(key, float("inf")), time.perf_counter() - t0)
    base = len(usable) / best["pil"]
    for name, seconds in best.items():
        rate = len(usable) / seconds
        diff = f"   mean |diff| vs pil {np.mean(diffs[name]):5.2f} /255" if name in diffs else ""
        print(f"  {name:26s} {rate:8.0f} images/s  ({rate / base:4.2f}x pil){diff}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--limit", type=int, default=None, help="only the first N files of each folder")
    p.add_argument("--workers", type=int, default=0, help="also time pil and tv_jpeg_bicubic on N threads")
    args = p.parse_args()
    torch.set_num_threads(1)  # single thread: the loader runs one decode per worker thread
    for folder in args.folders:
        bench(folder, args.size, args.repeats, args.limit, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
