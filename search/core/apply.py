"""Applying a trained model to images of any size: padding to what the U-Net needs, reference or given masks,
composited uint8 outputs. Used by `search.inpaint`.

Holes come from mask PNGs (white = hole, matched by file name) or from the reference corruption with a seed and
the file name (those masks are written beside the outputs). Unreadable images are reported and skipped.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from data.corrupt import Corruption, apply_mask, composite, draw_mask
from data.images import DECODE_ERRORS, MIN_SIDE, scan, to_rgb
from search.core.progress import Progress


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        if min(img.size) < MIN_SIDE:
            raise ValueError(f"tiny: {img.size[0]}x{img.size[1]} (under {MIN_SIDE} px, smaller than one hole)")
        img.load()
        return np.asarray(to_rgb(ImageOps.exif_transpose(img)), dtype=np.uint8).copy()


def _save_png(image: Image.Image, path: Path) -> None:
    """Written whole or not at all: an interrupted run leaves no half-written output."""
    tmp = path.with_name(path.name + ".tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)


def reference_mask(height: int, width: int, corruption: Corruption, seed: int, name: str) -> np.ndarray:
    """The reference corruption for one image of any size, fixed by the seed and the file name."""
    key = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big")
    rng = np.random.default_rng(np.random.SeedSequence([seed, key]))
    return draw_mask(corruption, rng, (height, width))[0].numpy() > 0.5


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as img:
        mask = np.asarray(img.convert("L")) >= 128
    if mask.shape != shape:
        raise ValueError(f"mask {path.name} is {mask.shape[1]}x{mask.shape[0]}, image is {shape[1]}x{shape[0]}")
    return mask


@torch.no_grad()
def inpaint_array(model: torch.nn.Module, image: np.ndarray, mask: np.ndarray, device: torch.device) -> np.ndarray:
    """Composited uint8 result for one (H, W, 3) image and (H, W) boolean mask."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).to(device)
    m = torch.from_numpy(mask)[None, None].float().to(device)
    h, w = image.shape[:2]
    k = model.multiple
    pad = (0, (-w) % k, 0, (-h) % k)
    # Replicate padding: the padded border is known context, never a hole the model must invent.
    xp, mp = F.pad(x, pad, mode="replicate"), F.pad(m, pad)
    out = composite(model(apply_mask(xp, mp)).float(), xp, mp)[..., :h, :w]
    return (out[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()


def inpaint_folder(
    model: torch.nn.Module, corruption: Corruption, root: Path, out: Path, device: torch.device,
    masks: Path | None = None, mask_seed: int = 0,
) -> tuple[int, list[tuple[str, str]]]:
    """Repair every image under `root` into `out` (same relative paths, PNG); returns (written, skipped list)."""
    root, out = Path(root).resolve(), Path(out)
    files = scan(root)
    if not files:
        raise FileNotFoundError(f"no images found under {root}")
    out.mkdir(parents=True, exist_ok=True)
    done, skipped = 0, []
    progress = Progress("inpaint")  # one line every 5 s and at the end (logs too, not only terminals)
    for i, path in enumerate(files, 1):
        rel = path.relative_to(root)
        progress(i - 1, len(files))
        try:
            image = read_rgb(path)
            if masks is not None:
                mask = read_mask(Path(masks) / rel.with_suffix(".png"), image.shape[:2])
            else:
                mask = reference_mask(*image.shape[:2], corruption, mask_seed, rel.as_posix())
            result = inpaint_array(model, image, mask, device)
        except (*DECODE_ERRORS, torch.cuda.OutOfMemoryError) as exc:  # one bad file never stops the batch
            skipped.append((rel.as_posix(), f"{type(exc).__name__}: {exc}"))
            continue
        target = out / rel.with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        _save_png(Image.fromarray(result), target)
        if masks is None:
            _save_png(Image.fromarray(mask.astype(np.uint8) * 255), target.with_name(target.stem + "_mask.png"))
        done += 1
    progress(len(files), len(files))
    return done, skipped
