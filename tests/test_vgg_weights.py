"""Checks that the shipped VGG16 conv weights are present, well-formed and the genuine ImageNet ones."""

from __future__ import annotations

import pytest
from safetensors import safe_open

from losses.vgg_weights import (
    CONV_CHANNELS,
    INPUT_CONVENTION,
    LICENSE,
    REFERENCE_FIRST_BIASES,
    SHIPPED_LAYERS,
    SHIPPED_WEIGHTS,
    SOURCE_WHEEL_SHA256,
    TORCHVISION_INDICES,
)

_SHIPPED = list(zip(TORCHVISION_INDICES[:10], CONV_CHANNELS[:10], strict=True))
EXPECTED_SHAPES = {
    **{f"features.{i}.weight": (o, c, 3, 3) for i, (o, c) in _SHIPPED},
    **{f"features.{i}.bias": (o,) for i, (o, _) in _SHIPPED},
}


@pytest.fixture(scope="module")
def shipped():
    assert SHIPPED_WEIGHTS.is_file(), f"missing {SHIPPED_WEIGHTS}; rebuild with python -m losses.vgg_weights"
    with safe_open(str(SHIPPED_WEIGHTS), framework="numpy") as f:
        yield f


def test_keys_and_shapes(shipped) -> None:
    assert SHIPPED_LAYERS == 10
    assert len(EXPECTED_SHAPES) == 20
    assert set(shipped.keys()) == set(EXPECTED_SHAPES)
    for key, shape in EXPECTED_SHAPES.items():
        assert tuple(shipped.get_slice(key).get_shape()) == shape, key
    # Spot-check the ends explicitly, independent of the module's own tables.
    assert EXPECTED_SHAPES["features.0.weight"] == (64, 3, 3, 3)
    assert EXPECTED_SHAPES["features.21.weight"] == (512, 512, 3, 3)


def test_dtype_is_fp16(shipped) -> None:
    keys = shipped.keys()  # safe_open is not iterable itself
    for key in keys:
        assert shipped.get_slice(key).get_dtype() == "F16", key


def test_first_biases_match_oxford_vgg16(shipped) -> None:
    # fp16 has ~3 significant digits, so compare within its rounding rather than the build's 1e-6.
    for idx, expected in zip(TORCHVISION_INDICES[:10], REFERENCE_FIRST_BIASES[:10], strict=True):
        actual = float(shipped.get_slice(f"features.{idx}.bias")[0:1][0])
        assert actual == pytest.approx(expected, rel=1e-3, abs=2e-4), idx


def test_metadata_records_provenance(shipped) -> None:
    meta = shipped.metadata()
    assert meta["source_wheel_sha256"] == SOURCE_WHEEL_SHA256
    assert meta["license"] == LICENSE
    assert meta["input_convention"] == INPUT_CONVENTION
