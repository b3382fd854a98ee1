"""torch Datasets over a split of a Source, with per-dataset augmentation."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .sources import Source


def build_transform(augment: str, train: bool, size: tuple[int, int], mean: list[float], std: list[float]):
    from torchvision.transforms import v2

    steps: list = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    steps.append(v2.Resize(size, antialias=True))
    if train:
        h = size[0]
        if augment == "digits":
            steps.append(v2.RandomAffine(degrees=8, translate=(0.1, 0.1), scale=(0.9, 1.1)))
        elif augment == "handwriting":
            steps.append(v2.RandomAffine(degrees=10, translate=(0.1, 0.1)))
        elif augment == "synthetic":
            steps.append(v2.RandomAffine(degrees=0, translate=(0.06, 0.06)))
        else:
            steps += [v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True)] if h >= 64 else \
                [v2.RandomCrop(size, padding=max(1, h // 8))]
            steps.append(v2.RandomHorizontalFlip())
    steps.append(v2.Normalize(mean, std))
    return v2.Compose(steps)


class SourceDataset(Dataset):
    """Images of `source` at `indices`; labels pass through `label_map` (generalist id -> specialist position)."""

    def __init__(self, source: Source, indices: list[int] | np.ndarray, transform, label_map: dict[int, int] | None
                 = None):
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.label_map = label_map

    def __len__(self) -> int:
        return len(self.indices)

    def raw(self, i: int) -> np.ndarray:
        """Pixels as HWC uint8, before any transform."""
        j = int(self.indices[i])
        if self.source.images is not None:
            return self.source.images[j]
        from PIL import Image

        mode = "L" if self.source.channels == 1 else "RGB"
        with Image.open(self.source.root / self.source.files[j]) as im:
            arr = np.array(im.convert(mode))
        return arr[..., None] if arr.ndim == 2 else arr

    def label(self, i: int) -> int:
        y = int(self.source.labels[self.indices[i]])
        return self.label_map[y] if self.label_map is not None else y

    @property
    def labels(self) -> np.ndarray:
        y = self.source.labels[self.indices]
        return np.asarray([self.label_map[int(v)] for v in y]) if self.label_map is not None else y

    def __getitem__(self, i: int):
        return self.transform(self.raw(i)), self.label(i)
