"""Building a specialist's starting model from its parent: extraction and the paper's baselines.

All four start from a copy of the parent; only the classifier head (the last Linear) differs:
- extract:   Linear(d, |S|) with the parent's rows W[S], b[S] (methods.md 1, step 1).
- new-head:  a randomly initialised Linear(d, |S|) (head-first uses it too, then trains it alone first).
- suppress:  all |C| outputs kept during training, the ones outside S pushed to a large negative value.

Extraction itself is exact: the backbone is copied and the head's rows are W[S], b[S] bit for bit, so each
logit, computed as a reduction of its own, is the generalist's. Through nn.Linear the logits are bit-exact (fp32,
CPU) when the BLAS gives an output row the same bits whatever the other rows are: true for MKL's AVX-512 kernels
(Xeon) on the small heads tested (smallcnn, d=128) and for 200 of 1000 classes at d=1024, but not for 3 of 1000
there (~6e-7), nor for MKL's or OpenBLAS's AVX2 kernels (AMD EPYC), where merely permuting W's rows changed
smallcnn's logits by ~5e-6. tests/conftest.py's `assert_head_slice` checks it that way.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..models import get_head, head_path, set_head

SUPPRESS_VALUE = -1.0e4  # added to logits outside the group: softmax gives them exactly 0 in fp32


def extract_head(head: nn.Linear, positions: list[int]) -> nn.Linear:
    """`Linear(d, |S|)` whose rows are `head`'s rows at `positions`, in that order."""
    new = nn.Linear(head.in_features, len(positions), bias=head.bias is not None,
                    device=head.weight.device, dtype=head.weight.dtype)
    idx = torch.as_tensor(positions, dtype=torch.long, device=head.weight.device)
    with torch.no_grad():
        new.weight.copy_(head.weight.index_select(0, idx))
        if head.bias is not None:
            new.bias.copy_(head.bias.index_select(0, idx))
    return new


def extract(model: nn.Module, positions: list[int]) -> nn.Module:
    """A copy of `model` whose logits are `model`'s logits[:, positions] (bit-exact before training)."""
    out = copy.deepcopy(model)
    set_head(out, extract_head(get_head(model), positions))
    return out


def with_new_head(model: nn.Module, num_classes: int, zero: bool = False) -> nn.Module:
    """A copy of `model` with a fresh head (PyTorch's default init, drawn from torch's global RNG; or zeros)."""
    old = get_head(model)
    out = copy.deepcopy(model)
    head = nn.Linear(old.in_features, num_classes, bias=old.bias is not None, device=old.weight.device,
                     dtype=old.weight.dtype)
    if zero:
        with torch.no_grad():
            head.weight.zero_()
            if head.bias is not None:
                head.bias.zero_()
    set_head(out, head)
    return out


class SuppressLinear(nn.Linear):
    """The parent's full head with its rows reordered group-first; outputs past the group are suppressed.

    Output j < |S| is group class j, so the specialist's labels (positions in S) index it directly and
    training needs no special loss; outputs >= |S| get SUPPRESS_VALUE added (they still carry gradients,
    which is what makes suppression break under label smoothing).
    """

    def __init__(self, head: nn.Linear, positions: list[int]):
        n = head.out_features
        rest = [i for i in range(n) if i not in set(positions)]
        order = list(positions) + rest
        super().__init__(head.in_features, n, bias=head.bias is not None, device=head.weight.device,
                         dtype=head.weight.dtype)
        idx = torch.as_tensor(order, dtype=torch.long, device=head.weight.device)
        with torch.no_grad():
            self.weight.copy_(head.weight.index_select(0, idx))
            if head.bias is not None:
                self.bias.copy_(head.bias.index_select(0, idx))
        self.group_size = len(positions)
        mask = torch.zeros(n, dtype=head.weight.dtype, device=head.weight.device)
        mask[self.group_size:] = SUPPRESS_VALUE
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.mask


def suppress(model: nn.Module, positions: list[int]) -> nn.Module:
    out = copy.deepcopy(model)
    set_head(out, SuppressLinear(get_head(model), positions))
    return out


def drop_suppressed(model: nn.Module) -> nn.Module:
    """The deployable specialist of a suppress run: the group's rows only.

    Exact at inference: suppression only added a constant to the other outputs, and argmax/softmax over the
    group never depended on them.
    """
    model = model.module if hasattr(model, "module") else model
    head = model.get_submodule(head_path(model))
    if not isinstance(head, SuppressLinear):
        return model
    out = copy.deepcopy(model)
    set_head(out, extract_head(head, list(range(head.group_size))))
    return out
