"""Checkpoint files: written atomically, read with `weights_only=True`, rebuilt into a model from their own config.

A checkpoint holds only tensors and plain values (model and optimizer state, the flat config, history, RNG
state), so it never needs Python's full unpickler: a file that would run code when loaded is refused, and a
truncated, empty or foreign file is an error that names the file.
"""

from __future__ import annotations

import io
import pickle
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from models.unet import UNet
from search.core.config import Config

TRIAL_FILE = "checkpoint.pt"  # the file inside a trial's checkpoint folder in a search's storage


class CheckpointError(ValueError):
    """A file that is not a loadable checkpoint of this project; the message names it and says why."""


def locate(model: str | Path) -> Path:
    """The checkpoint file a user means: a file, a trial's checkpoint folder in a search's storage (as the search
    summary prints it), or that folder's URI on remote storage (s3://..., copied into a temp folder first)."""
    text = str(model)
    if "://" not in text:
        path = Path(text).expanduser()
        return path / TRIAL_FILE if path.is_dir() else path
    import pyarrow.fs as pafs  # only for remote storage (it comes with Ray and MLflow)

    try:
        fs, path = pafs.FileSystem.from_uri(text)
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.NotFound:
            raise CheckpointError(f"checkpoint {text} does not exist")
        source = f"{path}/{TRIAL_FILE}" if kind == pafs.FileType.Directory else path
        local = Path(tempfile.mkdtemp(prefix="inpaint-model-")) / TRIAL_FILE
        with fs.open_input_stream(source) as f, open(local, "wb") as out:
            shutil.copyfileobj(f, out)
    except (OSError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"cannot read the checkpoint {text} ({exc})") from None
    return local


def save_checkpoint(checkpoint: dict, path: Path) -> Path:
    """Write atomically, so an interrupted save never leaves a half-written checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    # Serialised in memory first: torch's own file writer reports a full disk as "unexpected pos ..."; a plain
    # write raises OSError(ENOSPC), which the commands turn into what to do.
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    try:
        with open(tmp, "wb") as fh:
            fh.write(buffer.getbuffer())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or a Ctrl-C: no half-written file left beside the good one
        raise
    tmp.replace(path)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu",
                    required: tuple[str, ...] = ("model", "config")) -> dict[str, Any]:
    """The checkpoint dict at `path`, loaded without running any code; `required` keys must be present."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # The weights-only unpickler stops before running anything. A GLOBAL is a class or function reference:
        # the full unpickler would import and call it, which is how a checkpoint runs code.
        named = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if named:
            raise CheckpointError(
                f"{path} holds Python objects besides tensors and plain values ({named.group(1)}); loading it could "
                "run code, so it is refused. Checkpoints of this project never need that: use one written by it"
            ) from None
        detail = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in detail if line.startswith("Unsupported")), detail[-1] if detail else "")
        raise CheckpointError(f"{path} is not a readable checkpoint: the weights-only loader refuses its content "
                              f"({detail[:120]}); nothing in it was run") from None
    except (RuntimeError, EOFError, KeyError, zipfile.BadZipFile, OSError, ValueError) as exc:
        # torch reports a truncated zip as RuntimeError, an empty file as EOFError, text as KeyError.
        # Its first sentence: torch's zip reader goes on about internal miniz errors.
        first = str(exc).splitlines()[0].split(". ")[0][:160] if str(exc) else "no data"
        reason = f"{type(exc).__name__}: {first}"
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated, corrupt or not a PyTorch file: "
                              f"{reason})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint of this project (a dict "
                              "with the model state and its config)")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint of this project: it has no {', '.join(missing)} "
                              f"(keys: {', '.join(map(str, list(ckpt)[:8])) or 'none'})")
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[UNet, Config]:
    """Rebuild a trained model from any checkpoint of this project (a file, or a folder or URI: see `locate`): it
    carries its own flat config."""
    path = locate(path)
    ckpt = load_checkpoint(path, map_location=device)
    if not isinstance(ckpt["config"], dict) or not isinstance(ckpt["model"], dict):
        raise CheckpointError(f"{path} is not a checkpoint of this project: its config and model are not dicts")
    try:
        cfg = Config.from_flat(ckpt["config"])
        model = UNet(cfg.model).to(device)
        model.load_state_dict(ckpt["model"])
    except (KeyError, ValueError, RuntimeError) as exc:  # unknown key, bad value, mismatched weights
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise CheckpointError(f"{path}: its config or weights do not build this project's U-Net: "
                              f"{str(msg).splitlines()[0][:300]}") from None
    return model.eval(), cfg
