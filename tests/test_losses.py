"""Loss terms: zero on a perfect prediction, positive otherwise, weights acting where they should."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import losses.perceptual as perceptual_mod
from data.corrupt import Corruption, random_masks
from data.images import DEFAULT_IMAGES, load_image
from losses.composite import CompositeLoss, LossConfig
from losses.perceptual import LAYERS, VGGFeatures, gram, perceptual_and_style
from losses.pixel import reconstruction
from losses.tv import dilate, total_variation


@pytest.fixture(scope="module")
def vgg() -> VGGFeatures:
    return VGGFeatures()


@pytest.fixture()
def cached_torchvision(tmp_path, monkeypatch) -> None:
    """Stand in for a user's cached torchvision checkpoint: the same genuine tensors, torchvision's layout."""
    from safetensors.torch import load_file

    ckpt = tmp_path / "hub" / "checkpoints" / perceptual_mod.TORCHVISION_FILE
    ckpt.parent.mkdir(parents=True)
    torch.save({k: v.float() for k, v in load_file(str(perceptual_mod.SHIPPED_WEIGHTS)).items()}, ckpt)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))


@pytest.fixture()
def batch(small_images):
    torch.manual_seed(0)
    image = small_images.batch(list(range(4)))
    mask = random_masks(Corruption(4, 16, 64), 4, 64, generator=torch.Generator().manual_seed(0))
    return image, mask


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_reconstruction_zero_when_perfect_and_regions_separate(batch, kind):
    image, mask = batch
    terms = reconstruction(image, image, mask, kind)
    assert terms[f"{kind}_hole"] == 0 and terms[f"{kind}_valid"] == 0
    in_hole = image + 0.1 * mask
    terms = reconstruction(in_hole, image, mask, kind)
    assert terms[f"{kind}_hole"] == pytest.approx(0.1 if kind == "l1" else 0.01, rel=1e-4)
    assert terms[f"{kind}_valid"] == 0
    outside = image + 0.1 * (1 - mask)
    terms = reconstruction(outside, image, mask, kind)
    assert terms[f"{kind}_hole"] == 0 and terms[f"{kind}_valid"] > 0


def test_hole_and_valid_weights_act_on_their_region(batch):
    image, mask = batch
    in_hole, outside = image + 0.1 * mask, image + 0.1 * (1 - mask)
    base = CompositeLoss(LossConfig(w_perceptual=0, w_tv=0, w_hole=1, w_valid=1))
    heavy_hole = CompositeLoss(LossConfig(w_perceptual=0, w_tv=0, w_hole=6, w_valid=1))
    assert heavy_hole(in_hole, image, mask)[0] == pytest.approx(6 * base(in_hole, image, mask)[0].item(), rel=1e-4)
    assert heavy_hole(outside, image, mask)[0] == pytest.approx(base(outside, image, mask)[0].item(), rel=1e-4)


def test_perceptual_and_style_zero_when_perfect_positive_otherwise(batch, vgg):
    image, mask = batch
    perfect = perceptual_and_style(vgg, image, image, image, perceptual=True, style=True)
    assert perfect["perceptual"] == 0 and perfect["style"] == 0
    noisy = (image + 0.2 * torch.randn_like(image) * mask).clamp(0, 1)
    comp = mask * noisy + (1 - mask) * image
    terms = perceptual_and_style(vgg, noisy, comp, image, perceptual=True, style=True)
    assert terms["perceptual"] > 0 and terms["style"] > 0


def test_perceptual_gradient_reaches_the_prediction_not_the_target(batch, vgg):
    image, mask = batch
    pred = torch.full_like(image, 0.5, requires_grad=True)
    target = image.clone().requires_grad_(True)
    comp = mask * pred + (1 - mask) * target
    perceptual_and_style(vgg, pred, comp, target)["perceptual"].backward()
    assert pred.grad.abs().sum() > 0
    assert target.grad is None or target.grad[mask.expand_as(image) == 1].abs().sum() == 0


def test_vgg_is_frozen_and_in_eval_mode(vgg):
    vgg.train()
    assert not vgg.training and not vgg.features.training
    assert not any(p.requires_grad for p in vgg.parameters())


def test_gram_is_normalised():
    f = torch.ones(1, 4, 8, 8)
    assert torch.allclose(gram(f), torch.full((1, 4, 4), 1 / 4))


def test_tv_zero_on_flat_fill_positive_on_texture(batch):
    image, mask = batch
    flat = torch.full_like(image, 0.3)
    assert total_variation(flat, mask) == 0
    noisy = flat + 0.1 * torch.randn_like(flat) * mask
    assert total_variation(noisy, mask) > 0


def test_tv_sees_only_the_hole_dilated_by_one_pixel():
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 10:20, 10:20] = 1
    flat = torch.full((1, 3, 32, 32), 0.5)
    far = flat.clone()
    far[..., 2, 2] = 1.0  # far from the hole
    assert total_variation(far, mask) == 0
    ring = flat.clone()
    ring[..., 9, 15] = 1.0  # one pixel outside the hole: inside the dilated region
    assert total_variation(ring, mask) > 0
    assert dilate(mask).sum() == 12 * 12


def test_composite_builds_only_enabled_terms(batch):
    image, mask = batch
    plain = CompositeLoss(LossConfig(w_perceptual=0, w_style=0, w_tv=0, w_valid=0))
    assert plain.vgg is None
    total, terms = plain(image * 0.5, image, mask)
    assert set(terms) == {"l1_hole"}
    assert total == pytest.approx(6 * terms["l1_hole"].item(), rel=1e-5)
    full = CompositeLoss(LossConfig(recon="l2", w_style=10.0))
    total, terms = full(image * 0.5, image, mask)
    assert set(terms) == {"l2_hole", "l2_valid", "perceptual", "style", "tv"}
    c = full.cfg
    expected = (c.w_hole * terms["l2_hole"] + c.w_valid * terms["l2_valid"] + c.w_perceptual * terms["perceptual"]
                + c.w_style * terms["style"] + c.w_tv * terms["tv"])
    assert total == pytest.approx(expected.item(), rel=1e-5)
    zero, zero_terms = full(image, image, mask)
    assert zero_terms["l2_hole"] == 0 and zero_terms["perceptual"] == 0 and zero_terms["style"] == 0


def test_layer_choice(batch):
    image, _ = batch
    feats = VGGFeatures(("relu1_2", "pool3", "relu4_3"))(image)
    assert feats["relu1_2"].shape[1:] == (64, 64, 64)
    assert feats["pool3"].shape[1:] == (256, 8, 8)
    assert feats["relu4_3"].shape[1:] == (512, 8, 8)
    with pytest.raises(ValueError, match="relu9_9"):
        LossConfig(perceptual_layers="relu1_2,relu9_9").validate()


def test_missing_weights_fail_loudly_never_random(tmp_path, monkeypatch):
    monkeypatch.setattr(perceptual_mod, "SHIPPED_WEIGHTS", tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match="python -m losses.vgg_weights"):
        VGGFeatures()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        VGGFeatures(source="torchvision")


def test_torchvision_source_loads_a_cached_checkpoint(cached_torchvision, batch):
    feats = VGGFeatures(source="torchvision")(batch[0])
    assert set(feats) == {"relu1_2", "relu2_2", "relu3_3"}
    assert all(torch.isfinite(f).all() for f in feats.values())


def _hand_built_vgg16_features(last: int) -> nn.Sequential:
    """The extractor's previous, hand-built layout (kept only to check the torchvision model against it)."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"]
    layers: list[nn.Module] = []
    cin = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
            cin = v
    return nn.Sequential(*layers[: last + 1])


def test_extractor_is_torchvisions_vgg16_filled_with_the_shipped_tensors():
    import torchvision
    from safetensors.torch import load_file

    vgg = VGGFeatures(tuple(LAYERS))  # every tap, so every kept layer (through pool4)
    with torch.device("meta"):  # types and shapes only: no 550 MB classifier for a reference
        reference = torchvision.models.vgg16(weights=None).features[: max(LAYERS.values()) + 1]
    assert len(vgg.features) == len(reference) == 24
    for i, (mine, ref) in enumerate(zip(vgg.features, reference, strict=True)):
        assert type(mine) is type(ref) and repr(mine) == repr(ref), i  # repr holds kernel, stride, padding
        assert [(n, p.shape) for n, p in mine.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    # No storage is left uninitialised: every tensor is on the CPU and equal to the genuine shipped one.
    shipped = load_file(str(perceptual_mod.SHIPPED_WEIGHTS))
    state = vgg.features.state_dict()
    assert set(state) == {k.split(".", 1)[1] for k in shipped}
    for key, value in state.items():
        assert value.device.type == "cpu" and torch.equal(value, shipped[f"features.{key}"].float()), key


def test_a_missing_tensor_fails_loudly_never_uninitialised(monkeypatch):
    state, convention = perceptual_mod._load_state("shipped")
    del state["features.14.bias"]  # conv3_3, which the default layers need
    monkeypatch.setattr(perceptual_mod, "_load_state", lambda source: (state, convention))
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*14\.bias"):
        VGGFeatures()


@pytest.mark.parametrize("source", ["shipped", "torchvision"])
def test_outputs_equal_the_hand_built_extractor_on_a_real_image(source, request, monkeypatch):
    if source == "torchvision":
        request.getfixturevalue("cached_torchvision")
    path = sorted(DEFAULT_IMAGES.glob("*.jpg"))[0]
    image = torch.from_numpy(load_image(path, 96)).permute(2, 0, 1)[None].float() / 255.0
    layers = tuple(LAYERS)
    new = VGGFeatures(layers, source=source)
    with monkeypatch.context() as m:
        m.setattr(perceptual_mod, "_vgg_features", _hand_built_vgg16_features)
        old = VGGFeatures(layers, source=source)
    assert new.features[1].inplace and not old.features[1].inplace  # two builders really are being compared
    with torch.no_grad():
        got, want = new(image), old(image)
    assert set(got) == set(want) == set(layers)
    for name in layers:
        torch.testing.assert_close(got[name], want[name], msg=name)
        assert want[name].abs().max() > 0, name  # a real image gives real activations, not a vacuous match
