"""Shared command-line pieces: common flags, range-checked numbers, `--set section.field=value` overrides,
one-line errors. Used by the command modules only; no library module imports this file's callers."""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from search.core.config import Config
from search.core.device import resolve_device


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="", help="image folder (default: the embedded default images)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--json", default="", metavar="PATH", help="also write the figures as JSON to PATH")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set model.width=16 (repeatable)")


def at_least(low: float, kind: type = int, above: bool = False):
    """An argparse `type` that parses `kind` and refuses values below `low` (or not above it, if `above`), so a
    bad number fails at parse time with the flag's name instead of deep inside a run."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if value != value or (value <= low if above else value < low):  # NaN fails too
            raise argparse.ArgumentTypeError(f"must be {'>' if above else '>='} {low:g}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def set_overrides(cfg: Config, pairs: list[str]) -> Config:
    """Apply `section.field=value` strings to cfg in place; a bad key or value raises naming it."""
    flat = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        flat[key.strip()] = value.strip()
    new = Config.from_flat(flat, base=cfg)
    for section in ("model", "loss", "optim", "sched", "data", "train"):
        setattr(cfg, section, getattr(new, section))
    return cfg


def fail(tool: str, exc: BaseException) -> int:
    """Print a one-line error (no traceback) and return the exit code 2."""
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        msg += ("; every file written so far is whole (checkpoints are replaced atomically): free some space and run "
                "the same command again, it continues from the last complete checkpoint")
    print(f"{tool}: error: {msg}", file=sys.stderr)
    return 2


def sanity_size(requested: int | None, device: str) -> int:
    """Image size for the sanity tools: the training size (256) on a GPU, 96 on a CPU unless asked.

    On a 2-core CPU without bf16 a 256x256 step with the perceptual term takes ~25 s; at 96 it takes ~2 s, so the
    checks finish in minutes. Holes are scaled with the size (see `data.corrupt.scaled_hole`).
    """
    if requested:
        return requested
    return 256 if resolve_device(device).type == "cuda" else 96


def write_json(path: str | Path, figures: dict) -> None:
    """The `--json PATH` of every command: parent folders created, values JSON cannot hold written as text."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, default=str))
