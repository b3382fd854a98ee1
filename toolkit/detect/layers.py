"""A YOLO block rewritten so that Torch-Pruning can follow it (methods.md 4, its Ultralytics example).

C2f (and its subclass C3k2) and C2PSA split one conv's output in two halves (`chunk(2, 1)` / `split((c, c), 1)`)
before a concatenation: the split sizes are constants in the forward, so pruning the conv's channels breaks
them. Torch-Pruning's own YOLOv8 example replaces the split conv with two convs, each one half (`C2f_v2`); this
module does the same for C2f, C3k2 and C2PSA, with the parent's weights copied exactly (the same eval output).
Checkpoints of compressed detectors pickle this class; `offline.check_pickle` accepts it as a layer.
"""

from __future__ import annotations

import torch
from torch import nn


def _copy_conv(dst, src, rows: slice) -> None:
    """Ultralytics Conv (conv + bn + act) `dst` = rows `rows` of `src`."""
    with torch.no_grad():
        dst.conv.weight.copy_(src.conv.weight[rows])
        for key in ("weight", "bias", "running_mean", "running_var"):
            getattr(dst.bn, key).copy_(getattr(src.bn, key)[rows])
    dst.bn.eps, dst.bn.momentum = src.bn.eps, src.bn.momentum
    dst.act = src.act


class SplitFreeC2f(nn.Module):
    """C2f / C3k2 (`chained`: each inner block feeds the next, all outputs concatenated) or C2PSA (`chained` off:
    the attention blocks run in sequence on the second half) with the split conv `cv1` as two convs `cv0`, `cv1`."""

    def __init__(self, block: nn.Module, chained: bool):
        super().__init__()
        from ultralytics.nn.modules.conv import Conv

        c, c_in = block.c, block.cv1.conv.in_channels
        self.chained = chained
        self.cv0 = Conv(c_in, c, 1, 1)
        self.cv1 = Conv(c_in, c, 1, 1)
        _copy_conv(self.cv0, block.cv1, slice(0, c))
        _copy_conv(self.cv1, block.cv1, slice(c, 2 * c))
        self.m = block.m
        self.cv2 = block.cv2
        for attr in ("i", "f", "type", "np"):  # what DetectionModel's forward and its summaries read
            if hasattr(block, attr):
                setattr(self, attr, getattr(block, attr))
        self.train(block.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv0(x), self.cv1(x)
        if not self.chained:
            return self.cv2(torch.cat((a, self.m(b)), 1))
        y = [a, b]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


def replace_split_blocks(model: nn.Module) -> int:
    """Replace every C2f / C3k2 / C2PSA in `model` (in place) by its SplitFreeC2f; returns how many."""
    from ultralytics.nn.modules.block import C2PSA, C2f

    n = 0
    for name, child in model.named_children():
        if isinstance(child, (C2f, C2PSA)):
            setattr(model, name, SplitFreeC2f(child, chained=isinstance(child, C2f)))
            n += 1
        else:
            n += replace_split_blocks(child)
    return n
