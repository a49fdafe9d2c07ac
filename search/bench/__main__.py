"""`python -m search.bench`: how fast the product is, measured side by side in one run on this machine (the entry;
the measurements are in `sections` and `parts`).

Training step (naive fp32 loop vs the project's loop, FLOP/s against a matmul peak measured here), the data path
(decoding source images vs reading the prepared cache vs what the step consumes), Ray Tune's overhead on a trial,
peak memory. Every measurement runs in a fresh process, so one cannot warm caches or hold memory for another.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from data.images import DataError
from search.bench.sections import SECTIONS, data_section, ray_section, step_section
from search.cli import at_least, fail, write_json


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m search.bench", description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {', '.join(SECTIONS)}")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--size", type=at_least(16), default=256, help="training image size for the step (default 256)")
    p.add_argument("--batch", type=at_least(1), default=8, help="batch size for the step (default 8)")
    p.add_argument("--steps", type=at_least(1), default=0,
                   help="timed steps per loop (default 3 on a CPU, 30 on a GPU)")
    p.add_argument("--compile", action="store_true", help="also time the project loop under torch.compile")
    p.add_argument("--packed", type=at_least(1), default=0, help="also run N project loops at once on the device "
                   "(trials packed on one GPU with fractional resources)")
    p.add_argument("--data", default="", help="source image folder for the data path (default: embedded images)")
    p.add_argument("--cache", default="", help="its data.prepare cache (default: prepared into a temp folder)")
    p.add_argument("--decode-images", type=at_least(1), default=256, help="source images to decode (default 256)")
    p.add_argument("--trial-seconds", type=at_least(0, float, above=True), default=60.0,
                   help="length of the Ray overhead trial (60)")
    p.add_argument("--pairs", type=at_least(1), default=3,
                   help="bare run / Tune trial pairs, run alternately; the median is reported (3)")
    p.add_argument("--json", default="", metavar="PATH", help="also write every figure as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        return fail("bench", ValueError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}"))
    figures: dict[str, Any] = {"cpus": os.cpu_count()}
    try:
        for name, section in (("step", step_section), ("data", data_section), ("ray", ray_section)):
            if name in sections:
                section(args, figures)
    except (DataError, ValueError, RuntimeError, FileNotFoundError) as exc:
        return fail("bench", exc)
    if args.json:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
