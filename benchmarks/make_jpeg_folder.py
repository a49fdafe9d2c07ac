"""Build a data.prepare test folder: real photos as 512x512 JPEGs (the album-cover format) plus corrupt files.

    python benchmarks/make_jpeg_folder.py SRC_DIR... --out DIR

Every image under the sources is centre-cropped, resized to 512 and saved as a quality-90 JPEG in sub-folders of
at most 500 files (like the Kaggle layout); then truncated, empty, non-image and tiny files are mixed in, named so
that the report can be checked against them. The sources here are the evaluation sets of ../shared/data.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image, ImageOps

EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sources", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, default=512)
    args = p.parse_args()
    files = sorted(f for src in args.sources for f in src.rglob("*") if f.suffix.lower() in EXTS)
    written = 0
    for i, f in enumerate(files):
        target = args.out / f"part{i // 500:02d}" / f"{i:05d}.jpg"
        if target.exists():
            written += 1
            continue
        try:
            with Image.open(f) as img:
                img = ImageOps.fit(img.convert("RGB"), (args.size, args.size), Image.Resampling.LANCZOS)
        except Exception as exc:  # a source we cannot read is not part of the benchmark
            print(f"skip source {f}: {exc}", file=sys.stderr)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        img.save(target, quality=90)
        written += 1
    bad = args.out / "corrupt"
    bad.mkdir(parents=True, exist_ok=True)
    whole = (args.out / "part00" / "00000.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "not_an_image.jpg").write_text("this is a text file with an image extension\n")
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buf, "PNG")
    (bad / "tiny.png").write_bytes(buf.getvalue())
    print(f"{written} images of {args.size}x{args.size} and 4 corrupt files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
