"""`python -m data.prepare SRC_DIR --out DIR`: decode a folder of images once into a compact uint8 cache.

The cache is `pixels.u8` (N x 3 x S x S, appended in chunks), `index.tsv` (row, default split, source path),
`skipped.tsv` (path, reason) and `meta.json`. Re-running continues an interrupted run and does nothing on a finished
one; training reads the cache (any `--data` that holds a meta.json) without decoding a JPEG.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from data.cache import INDEX, META, PIXELS, SKIPPED, drop_partial_line, read_rows
from data.images import DECODE_ERRORS, MIN_SIDE, DataError, load_image, scan, split_of

CHUNK = 256


def _decode(src: Path, rel: str, size: int, min_side: int) -> tuple[str, np.ndarray | None, str]:
    try:
        return rel, load_image(src / rel, size, min_side).transpose(2, 0, 1), ""
    except DECODE_ERRORS as exc:  # a bad file is reported, never fatal
        return rel, None, f"{type(exc).__name__}: {exc}"


def prepare(src: Path, out: Path, size: int = 256, workers: int = 4, min_side: int = MIN_SIDE) -> dict:
    """Build or continue the cache; returns counts and the decode rate."""
    src, out = Path(src).resolve(), Path(out)
    files = [p.relative_to(src).as_posix() for p in scan(src)]
    if not files:
        raise DataError(f"no images found under {src}")
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / META
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["size"] != size:
            raise DataError(f"{out} holds a {meta['size']} px cache; use --size {meta['size']} or another --out")
    for listing in (out / INDEX, out / SKIPPED):
        drop_partial_line(listing)
    rows, skipped = read_rows(out / INDEX), read_rows(out / SKIPPED)
    done = {r[2] for r in rows} | {r[0] for r in skipped}
    n_rows = len(rows)
    todo = [f for f in files if f not in done]
    frame = 3 * size * size
    # An interrupted write may have left pixels beyond the last indexed row: cut them off.
    with open(out / PIXELS, "ab") as fh:
        fh.truncate(n_rows * frame)
    t0, count = time.perf_counter(), 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, open(out / PIXELS, "ab") as pix, \
            open(out / INDEX, "a") as index, open(out / SKIPPED, "a") as bad:
        for start in range(0, len(todo), CHUNK):
            results = list(pool.map(lambda rel: _decode(src, rel, size, min_side), todo[start : start + CHUNK]))
            good = [(rel, arr) for rel, arr, _ in results if arr is not None]
            if good:
                pix.write(np.stack([arr for _, arr in good]).tobytes())
                pix.flush()  # pixels first: the index never points at rows that are not on disk
            for rel, _ in good:
                index.write(f"{n_rows}\t{split_of(rel, 0.1, 0.1)}\t{rel}\n")
                n_rows += 1
            for rel, _, reason in results:
                if reason:
                    bad.write(f"{rel}\t{reason}\n")
                    skipped.append([rel, reason])
            index.flush()
            bad.flush()
            count += len(results)
            rate = count / max(time.perf_counter() - t0, 1e-9)
            print(f"prepare: {len(done) + count}/{len(files)} images ({rate:.0f} img/s)", file=sys.stderr, flush=True)
    n_skipped = len(skipped)
    meta = {"version": 1, "size": size, "count": n_rows, "skipped": n_skipped, "source": str(src),
            "complete": True}
    meta_path.write_text(json.dumps(meta, indent=2))
    seconds = time.perf_counter() - t0
    return {"new": count, "images": n_rows, "skipped": n_skipped, "seconds": seconds,
            "images_per_s": count / seconds if count and seconds > 0 else 0.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data.prepare", description=__doc__.split("\n")[0])
    p.add_argument("src", help="folder tree of images (jpg, png, webp, ...)")
    p.add_argument("--out", required=True, help="cache folder (created; re-run to continue)")
    p.add_argument("--size", type=int, default=256, help="square size of the cached images (default 256)")
    p.add_argument("--workers", type=int, default=4, help="decoding threads (default 4)")
    p.add_argument("--min-side", type=int, default=MIN_SIDE,
                   help=f"skip images whose short side is smaller (default {MIN_SIDE})")
    args = p.parse_args(argv)
    try:
        result = prepare(Path(args.src), Path(args.out), args.size, args.workers, args.min_side)
    except (DataError, OSError) as exc:
        hint = ""
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            hint = (f"; what is in {args.out} is consistent: free some space and run the same command again, it "
                    "continues where it stopped")
        print(f"prepare: error: {exc}{hint}", file=sys.stderr)
        return 2
    if result["new"] == 0:
        print(f"prepare: nothing to do, {args.out} already holds all {result['images']} images")
    else:
        print(f"prepare: {result['images']} images in {args.out} ({result['new']} decoded now at "
              f"{result['images_per_s']:.0f} img/s); {result['skipped']} skipped, listed in {Path(args.out) / SKIPPED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
