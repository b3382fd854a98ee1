"""A name-based model factory over torchvision's classifiers plus edgespec's small CNN."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError, unknown_name
from ._smallcnn import SmallCNN

log = logging.getLogger(__name__)

TORCHVISION_MODELS = [
    "mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v2", "resnet18", "resnet34", "resnet50",
    "efficientnet_b0", "efficientnet_b1", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "regnet_y_400mf",
    "mnasnet0_5", "convnext_tiny",
]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., nn.Module]
    pretrained_ok: bool
    description: str
    min_input: int = 32  # smallest side the architecture's strides survive; smaller data is upsampled


# SmallCNN variants, declared as data (name: base width, description). Channels are width, 2*width, 4*width and
# the head sees 4*width features. The narrow ones are capacity-limited on many-class data: the regime where the
# specialization papers report gains (benchmarks/scripts/ablation.py --model).
SMALLCNN_VARIANTS: dict[str, tuple[int, str]] = {
    "smallcnn": (32, "3 conv+BN blocks (32/64/128 channels), ~0.1M parameters; seconds on CPU"),
    "smallcnn-w8": (8, "smallcnn at 1/4 width (8/16/32 channels), ~6k parameters"),
    "smallcnn-w4": (4, "smallcnn at 1/8 width (4/8/16 channels), ~2k parameters: capacity-limited"),
}


def _smallcnn_builder(width: int) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_channels: int, input_size: int, pretrained: bool) -> nn.Module:
        return SmallCNN(num_classes, in_channels, width=width, input_size=input_size)

    return build


def _torchvision_builder(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_channels: int, input_size: int, pretrained: bool) -> nn.Module:
        import torchvision.models as tvm

        if pretrained:
            weights = tvm.get_model_weights(name).DEFAULT
            model = tvm.get_model(name, weights=weights)  # downloads once into torch's cache
            _replace_head(model, num_classes)
        else:
            model = tvm.get_model(name, weights=None, num_classes=num_classes)
        if in_channels != 3:
            _adapt_first_conv(model, in_channels)
        _short_run_batchnorm(model)
        return model

    return build


#: Batch-norm momentum for every model edgespec builds. torchvision's MobileNetV3 (0.01) and MNASNet (0.0003)
#: keep the values of their long ImageNet recipes; over edgespec's runs (a few hundred steps) the running
#: statistics then stay near their initial values and eval outputs collapse: mobilenet_v3_small on digits at
#: 32 px reached 0.90 train accuracy and 0.096 (one class predicted) validation accuracy in 6 epochs.
BN_MOMENTUM = 0.1


def _short_run_batchnorm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.momentum is not None \
                and module.momentum < BN_MOMENTUM:
            module.momentum = BN_MOMENTUM


REGISTRY: dict[str, ModelSpec] = {
    **{n: ModelSpec(n, _smallcnn_builder(w), False, d, 1) for n, (w, d) in SMALLCNN_VARIANTS.items()},
    **{n: ModelSpec(n, _torchvision_builder(n), True, f"torchvision {n}") for n in TORCHVISION_MODELS},
}


def list_models() -> list[str]:
    return sorted(REGISTRY)


MAX_NATIVE_SIDE = 4096


def input_size_for(name: str, native: tuple[int, int], requested: int | None = None) -> tuple[int, int]:
    """The input size a model runs at: the user's `--image-size`, else the data's, raised to the model's minimum."""
    if name not in REGISTRY:
        raise unknown_name("model", name, REGISTRY)
    if requested:
        return (requested, requested)
    if max(native) > MAX_NATIVE_SIDE:  # a batch of such images exhausts memory before the first step
        raise UserError(f"the images are {native[1]}x{native[0]} pixels (median); pass --image-size N (at most "
                        f"{MAX_NATIVE_SIDE}) to train at a size that fits in memory")
    m = REGISTRY[name].min_input
    return (max(native[0], m), max(native[1], m))


def create_model(name: str, num_classes: int, in_channels: int = 3, input_size: int = 32,
                 pretrained: bool = False) -> nn.Module:
    if name not in REGISTRY:
        raise unknown_name("model", name, REGISTRY)
    spec = REGISTRY[name]
    if pretrained and not spec.pretrained_ok:
        raise UserError(f"model {name!r} has no pretrained weights; drop --pretrained")
    if num_classes < 2:
        raise UserError(f"a classifier needs at least 2 classes, got {num_classes}")
    return spec.build(num_classes=num_classes, in_channels=in_channels, input_size=input_size, pretrained=pretrained)


def head_path(model: nn.Module) -> str:
    """Dotted name of the classifier's last Linear layer: the layer specialization slices."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise UserError(f"{type(model).__name__} has no Linear layer to use as a classifier head")
    return last


def get_head(model: nn.Module) -> nn.Linear:
    return model.get_submodule(head_path(model))


def set_head(model: nn.Module, head: nn.Linear) -> None:
    path = head_path(model)
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, head)


def _replace_head(model: nn.Module, num_classes: int) -> None:
    old = get_head(model)
    set_head(model, nn.Linear(old.in_features, num_classes))


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Give the first conv `in_channels` inputs; pretrained RGB filters are averaged, not discarded."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            new = nn.Conv2d(in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                            module.dilation, module.groups if module.groups == 1 else in_channels,
                            module.bias is not None, module.padding_mode)
            with torch.no_grad():
                new.weight.copy_(module.weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1))
                if module.bias is not None:
                    new.bias.copy_(module.bias)
            parent_path, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            setattr(parent, attr, new)
            return
    raise UserError(f"cannot adapt {type(model).__name__} to {in_channels}-channel input")


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
