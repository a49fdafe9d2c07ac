"""`python -m search.inpaint --model CKPT --input DIR --output DIR`: apply a trained model to any images.

Images of any size are padded to what the U-Net needs and cropped back; holes come from mask PNGs (white = hole,
matched by file name) or from the reference corruption with a seed (those masks are written beside the outputs).
Outputs are composited PNGs: known pixels are the input's own. Unreadable files are reported and skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from search.cli import fail
from search.core.apply import inpaint_folder
from search.core.checkpoint import load_model
from search.core.device import resolve_device
from search.core.train import corruption_of


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m search.inpaint", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a checkpoint (.pt) written by this project, "
                   "or a search trial's checkpoint folder or URI (as the search summary prints it)")
    p.add_argument("--input", required=True, help="folder of images to repair")
    p.add_argument("--output", required=True, help="folder for the composited PNG outputs")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--masks", default="", help="folder of mask PNGs, white = hole, named like the images")
    group.add_argument("--mask-seed", type=int, default=0, help="generate reference holes with this seed (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> tuple[int, list[tuple[str, str]]]:
    device = resolve_device(args.device)
    model, cfg = load_model(args.model, device)
    masks = Path(args.masks) if args.masks else None
    return inpaint_folder(model, corruption_of(cfg), Path(args.input), Path(args.output), device, masks,
                          args.mask_seed)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        done, skipped = run(args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        return fail("inpaint", exc)
    print(f"inpaint: wrote {done} image(s) to {args.output}; skipped {len(skipped)} unreadable")
    for name, reason in skipped:
        print(f"  skipped {name}: {reason}")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
