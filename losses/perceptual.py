"""ImageNet-pretrained VGG16 features and the perceptual and style (Gram) losses built on them.

The architecture is torchvision's own vgg16 `features`, truncated after the deepest layer asked for. Weights come
from the genuine VGG16 tensors shipped in losses/weights (CC BY 4.0, see ATTRIBUTION.md), or from torchvision's own
checkpoint if the user has it cached. Nothing is downloaded and random weights are never used.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from losses.vgg_weights import SHIPPED_WEIGHTS

# Index of each named activation in a torchvision-style vgg16 `features` Sequential.
LAYERS = {
    "relu1_1": 1, "relu1_2": 3, "pool1": 4,
    "relu2_1": 6, "relu2_2": 8, "pool2": 9,
    "relu3_1": 11, "relu3_2": 13, "relu3_3": 15, "pool3": 16,
    "relu4_1": 18, "relu4_2": 20, "relu4_3": 22, "pool4": 23,
}
DEFAULT_LAYERS = ("relu1_2", "relu2_2", "relu3_3")
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21)
TORCHVISION_FILE = "vgg16-397923af.pth"
WEIGHT_SOURCES = ("shipped", "torchvision")


def parse_layers(layers: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Layer names from a tuple or a comma-separated string (the flat-config form)."""
    names = tuple(s.strip() for s in layers.split(",")) if isinstance(layers, str) else tuple(layers)
    unknown = [n for n in names if n not in LAYERS]
    if unknown or not names:
        raise ValueError(f"unknown VGG16 layer(s) {unknown or names}; choose from {', '.join(LAYERS)}")
    return names


def _vgg_features(last: int) -> nn.Sequential:
    """torchvision's vgg16 `features`, truncated after index `last`, on the CPU with UNINITIALISED storage.

    The caller must fill every tensor (VGGFeatures does, with a strict load_state_dict).
    """
    # Imported here, not at module level: `import torchvision` takes ~2 s on a small CPU, and this module is
    # imported by every config load, while the VGG is only built when a perceptual or style term is on.
    import torchvision

    # On the meta device the full model costs nothing: no 138M-parameter classifier (~550 MB) allocated, no random
    # init of layers we would overwrite anyway (seconds on a CPU). weights=None: a weights enum would download.
    with torch.device("meta"):
        vgg = torchvision.models.vgg16(weights=None)
    # Only the kept layers get real (empty) CPU storage; the rest of the model is dropped with `vgg`.
    return vgg.features[: last + 1].to_empty(device="cpu")


def _load_state(source: str) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict of `features.*` tensors, input convention) from the chosen source."""
    if source == "shipped":
        from safetensors.torch import load_file

        if not SHIPPED_WEIGHTS.is_file():
            raise FileNotFoundError(
                f"shipped VGG16 weights missing at {SHIPPED_WEIGHTS}; rebuild them with "
                "`pip install -e '.[weights]' && python -m losses.vgg_weights`"
            )
        return load_file(str(SHIPPED_WEIGHTS)), "caffe"
    if source == "torchvision":
        path = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"torchvision's VGG16 weights are not cached at {path}; this project never downloads them. "
                "Copy the file there, or use the shipped weights (loss.vgg_weights=shipped)."
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        return {k: v for k, v in state.items() if k.startswith("features.")}, "torchvision"
    raise ValueError(f"unknown VGG16 weight source {source!r}; choose one of {', '.join(WEIGHT_SOURCES)}")


class VGGFeatures(nn.Module):
    """Frozen VGG16 activations at the named layers, for RGB input in [0, 1].

    The shipped weights are the original Caffe ones (0-255 input minus the ImageNet mean); their activations
    are ~255x torchvision's, so they are divided by 255 to keep loss weights comparable between sources.
    """

    def __init__(self, layers: tuple[str, ...] = DEFAULT_LAYERS, source: str = "shipped"):
        super().__init__()
        self.layers = parse_layers(layers)
        self.taps = sorted({LAYERS[n] for n in self.layers})
        self.features = _vgg_features(self.taps[-1])
        state, convention = _load_state(source)
        # "features.<index>.<weight|bias>" -> "<index>.<...>", keeping only the layers this extractor has.
        wanted = {k.split(".", 1)[1]: v for k, v in state.items() if int(k.split(".")[1]) <= self.taps[-1]}
        # strict: the layers come from to_empty() with uninitialised storage, so every parameter and buffer of the
        # kept layers must get a genuine tensor (missing, unexpected or misshaped keys raise), never left as garbage.
        self.features.load_state_dict({k: v.float() for k, v in wanted.items()}, strict=True)
        self.features.requires_grad_(False).eval()
        if convention == "caffe":
            # x * 255 - mean_255, written as (x - mean) / std so both sources share one forward.
            mean, std, self.out_scale = [m / 255.0 for m in (123.68, 116.779, 103.939)], [1 / 255.0] * 3, 1 / 255.0
        else:
            mean, std, self.out_scale = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], 1.0
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGFeatures:
        # The extractor stays in eval mode whatever its parent does.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x - self.mean) / self.std
        out: dict[str, torch.Tensor] = {}
        by_index = {LAYERS[n]: n for n in self.layers}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in by_index:
                out[by_index[i]] = x * self.out_scale if self.out_scale != 1.0 else x
        return out


def gram(f: torch.Tensor) -> torch.Tensor:
    """Gram matrix (B, C, C) normalised by C*H*W, in fp32 (bf16 sums over H*W lose too much)."""
    b, c, h, w = f.shape
    f = f.float().reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def perceptual_and_style(
    vgg: VGGFeatures, pred: torch.Tensor, comp: torch.Tensor, target: torch.Tensor,
    perceptual: bool = True, style: bool = False,
) -> dict[str, torch.Tensor]:
    """Perceptual (L1 on features) and style (L1 on Gram matrices) terms, on the output and the composite.

    One VGG pass over [pred; comp]; the target's features need no gradient.
    """
    b = pred.shape[0]
    with torch.no_grad():
        f_t = vgg(target)
    f_pc = vgg(torch.cat([pred, comp], dim=0))
    terms: dict[str, torch.Tensor] = {}
    if perceptual:
        terms["perceptual"] = sum(
            (f_pc[n][:b].float() - f_t[n].float()).abs().mean() + (f_pc[n][b:].float() - f_t[n].float()).abs().mean()
            for n in vgg.layers
        )
    if style:
        terms["style"] = sum(
            (gram(f_pc[n][:b]) - gram(f_t[n])).abs().mean() + (gram(f_pc[n][b:]) - gram(f_t[n])).abs().mean()
            for n in vgg.layers
        )
    return terms
