"""Sample grids: one row per image, labelled columns (masked | output | target, or any others), torchvision's
`make_grid` for the layout and a strip of column labels (and an optional title) drawn above it."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

PAD = 2  # pixels between tiles (make_grid's default)
LABEL_HEIGHT = 16


def sample_grid(columns: dict[str, torch.Tensor], title: str = "") -> Image.Image:
    """A labelled grid from named columns, each (B, 3, H, W) in [0, 1] with the same B, H and W.

    Row i shows image i of every column, left to right in the dict's order; the label strip reads e.g.
    `masked | output | target`, under a line with `title` (such as the epoch) when given."""
    names = list(columns)
    tiles = torch.stack([c.detach().float().cpu().clamp(0, 1) for c in columns.values()], dim=1)  # B, C, 3, H, W
    b, n, _, h, w = tiles.shape
    grid = make_grid(tiles.reshape(b * n, 3, h, w), nrow=n, padding=PAD, pad_value=1.0)
    array = (grid * 255).round().byte().permute(1, 2, 0).numpy()
    body = Image.fromarray(array)
    top = LABEL_HEIGHT * (2 if title else 1)  # the title on a line of its own: tiles may be narrow
    out = Image.new("RGB", (body.width, body.height + top), "white")
    out.paste(body, (0, top))
    draw, font = ImageDraw.Draw(out), ImageFont.load_default()
    if title:
        draw.text((PAD + 2, 2), title, fill="black", font=font)
    for i, name in enumerate(names):
        draw.text((PAD + i * (w + PAD) + 2, top - LABEL_HEIGHT + 2), name, fill="black", font=font)
    return out
