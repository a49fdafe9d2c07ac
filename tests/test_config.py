"""Flat `section.field` keys: round trip, coercion, and errors that name the bad key."""

from __future__ import annotations

import pytest

from search.cli import set_overrides
from search.core.config import Config


def test_flat_round_trip():
    cfg = Config()
    flat = cfg.to_flat()
    assert {"model.depth", "loss.w_perceptual", "optim.lr", "sched.kind", "data.root", "train.epochs"} <= set(flat)
    assert Config.from_flat(flat).to_flat() == flat


def test_values_are_coerced_to_field_types():
    cfg = Config.from_flat({"model.depth": 3.0, "model.gated": "true", "optim.lr": "1e-3", "sched.kind": "cosine"})
    assert cfg.model.depth == 3 and isinstance(cfg.model.depth, int)
    assert cfg.model.gated is True and cfg.optim.lr == 1e-3 and cfg.sched.kind == "cosine"


def test_from_flat_never_changes_its_base():
    base = Config()
    Config.from_flat({"model.width": 8}, base=base)
    assert base.model.width == 32


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(KeyError, match="model.dpeth"):
        Config.from_flat({"model.dpeth": 3})
    with pytest.raises(ValueError, match="model.depth"):
        Config.from_flat({"model.depth": 2.5})
    with pytest.raises(ValueError, match="model.gated"):
        Config.from_flat({"model.gated": "maybe"})


def test_validate_names_the_problem():
    with pytest.raises(ValueError, match="sched.kind"):
        Config.from_flat({"sched.kind": "linear"}).validate()
    with pytest.raises(ValueError, match="divisible"):
        Config.from_flat({"data.image_size": 100}).validate()
    with pytest.raises(ValueError, match="loss.w_tv"):
        Config.from_flat({"loss.w_tv": -1}).validate()


def test_cli_overrides():
    cfg = set_overrides(Config(), ["model.width=16", "loss.recon = l2"])
    assert cfg.model.width == 16 and cfg.loss.recon == "l2"
    with pytest.raises(ValueError, match="KEY=VALUE"):
        set_overrides(Config(), ["model.width"])


def test_depth_must_leave_a_real_bottleneck():
    with pytest.raises(ValueError, match="use depth <= 5"):
        Config.from_flat({"data.image_size": 64, "model.depth": 6}).validate()
    Config.from_flat({"data.image_size": 128, "model.depth": 6}).validate()
