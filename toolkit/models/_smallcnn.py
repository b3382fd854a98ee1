"""A small CNN with batch-norm: trains in seconds on a CPU, for tests and the demo."""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                               nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32, input_size: int = 32):
        super().__init__()
        # Pool only while the feature map is still larger than 2x2, so 8x8 digits and 224x224 photos both work.
        pools = []
        side = input_size
        for _ in range(3):
            pools.append(side > 4)
            side = side // 2 if side > 4 else side
        self.features = nn.Sequential(
            _block(in_channels, width, pools[0]),
            _block(width, width * 2, pools[1]),
            _block(width * 2, width * 4, pools[2]),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))
