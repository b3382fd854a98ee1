"""Layer shapes that differ from the registry's: what a structurally pruned model needs to be rebuilt.

A pruned model (toolkit.compress) has fewer channels than `create_model` builds. Its checkpoint stays a plain dict
of tensors and builtins (loadable with `weights_only=True`, no pickled code): `layer_shapes` records the size
attributes of every shaped layer, `reshape_model` sets them on a freshly built model and gives each parameter and
buffer the checkpoint's shape, so `load_state_dict(strict=True)` then fills it exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import UserError

# Per layer type, the attributes its forward and its parameter shapes depend on.
SHAPED: tuple[tuple[type, tuple[str, ...]], ...] = (
    (nn.modules.conv._ConvNd, ("in_channels", "out_channels", "groups")),
    (nn.Linear, ("in_features", "out_features")),
    (nn.modules.batchnorm._BatchNorm, ("num_features",)),
    (nn.LayerNorm, ("normalized_shape",)),
    (nn.GroupNorm, ("num_groups", "num_channels")),
    (nn.PReLU, ("num_parameters",)),
)


def _attrs_of(module: nn.Module) -> tuple[str, ...] | None:
    for cls, attrs in SHAPED:
        if isinstance(module, cls):
            return attrs
    return None


def layer_shapes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """{layer name: {attribute: value}} for every shaped layer (lists for tuples: JSON- and weights_only-safe)."""
    out = {}
    for name, module in model.named_modules():
        attrs = _attrs_of(module)
        if attrs:
            out[name] = {a: list(v) if isinstance(v, tuple) else v for a, v in
                         ((a, getattr(module, a)) for a in attrs)}
    return out


def reshape_model(model: nn.Module, shapes: dict[str, dict[str, Any]], state: dict[str, torch.Tensor]) -> nn.Module:
    """Give `model` the layer sizes in `shapes` and the tensor shapes in `state` (in place; values are not set)."""
    modules = dict(model.named_modules())
    unknown = [n for n in shapes if n not in modules or _attrs_of(modules[n]) is None]
    if unknown:
        raise UserError(f"checkpoint describes layers this model does not have ({', '.join(unknown[:3])}); it "
                        "belongs to another architecture")
    for name, attrs in shapes.items():
        for attr, value in attrs.items():
            setattr(modules[name], attr, tuple(value) if isinstance(value, list) else value)
    for key, tensor in state.items():
        owner, _, attr = key.rpartition(".")
        module = modules.get(owner)
        if module is None:
            continue
        if attr in module._parameters and module._parameters[attr] is not None:
            old = module._parameters[attr]
            if old.shape != tensor.shape:
                module._parameters[attr] = nn.Parameter(torch.empty(tensor.shape, dtype=old.dtype),
                                                        requires_grad=old.requires_grad)
        elif attr in module._buffers and module._buffers[attr] is not None:
            old = module._buffers[attr]
            if old.shape != tensor.shape:
                module._buffers[attr] = torch.empty(tensor.shape, dtype=old.dtype)
    return model
