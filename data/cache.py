"""The on-disk format of a prepared image cache (written by `data.prepare`, read by `data.images`).

`pixels.u8` holds N x 3 x S x S uint8 rows; `index.tsv` one line per row (row, default split, source path);
`skipped.tsv` (path, reason); `meta.json` the size and row count.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

META, PIXELS, INDEX, SKIPPED = "meta.json", "pixels.u8", "index.tsv", "skipped.tsv"


def is_cache(path: Path) -> bool:
    return (Path(path) / META).is_file()


def drop_partial_line(path: Path) -> None:
    """Cut a last line that was never finished (a write stopped by a full disk or a kill), so rows appended next
    start on a line of their own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def read_rows(path: Path) -> list[list[str]]:
    """Tab-separated lines of an index or skip list (none if the file does not exist yet)."""
    if not path.exists():
        return []
    return [line.split("\t") for line in path.read_text().splitlines() if line.strip()]


def load_cache(root: Path) -> tuple[np.ndarray, list[str], dict]:
    """(pixels memmap (N, 3, S, S), relative paths, meta) of a prepared cache."""
    root = Path(root)
    meta = json.loads((root / META).read_text())
    rows = read_rows(root / INDEX)[: meta["count"]]
    size = meta["size"]
    if not rows:
        return np.zeros((0, 3, size, size), np.uint8), [], meta
    pixels = np.memmap(root / PIXELS, dtype=np.uint8, mode="r", shape=(len(rows), 3, size, size))
    return pixels, [r[2] for r in rows], meta
