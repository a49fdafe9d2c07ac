"""Shared command-line pieces: common flags, `--set section.field=value` overrides, one-line errors."""

from __future__ import annotations

import argparse
import sys

from search.config import Config


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="", help="image folder (default: the embedded default images)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--json", default="", metavar="PATH", help="also write the figures as JSON to PATH")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set model.width=16 (repeatable)")


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
    print(f"{tool}: error: {msg}", file=sys.stderr)
    return 2
