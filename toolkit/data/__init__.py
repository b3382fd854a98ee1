"""Data: sources (`--data SPEC`), the saved split, and datasets restricted to a group of classes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from .datasets import SourceDataset, build_transform
from .sources import DATA_KINDS, Source, load_source
from .split import check_split, fingerprint, make_split

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

__all__ = ["DATA_KINDS", "DataBundle", "Source", "SourceDataset", "check_split", "compute_stats", "fingerprint",
           "load_source", "make_split", "prepare"]


@dataclass
class DataBundle:
    """A source, its split, preprocessing, and optionally a restriction to some of its classes."""

    source: Source
    split: dict
    mean: list[float]
    std: list[float]
    input_size: tuple[int, int]
    class_ids: list[int]  # source class ids served, in output order

    @property
    def classes(self) -> list[str]:
        return [self.source.classes[i] for i in self.class_ids]

    @property
    def label_map(self) -> dict[int, int] | None:
        if self.class_ids == list(range(len(self.source.classes))):
            return None
        return {cid: pos for pos, cid in enumerate(self.class_ids)}

    def indices(self, split: str) -> np.ndarray:
        idx = np.asarray(self.split[split], dtype=np.int64)
        keep = np.isin(self.source.labels[idx], self.class_ids)
        return idx[keep]

    def dataset(self, split: str, train_transform: bool = False) -> SourceDataset:
        tf = build_transform(self.source.augment, train_transform, self.input_size, self.mean, self.std)
        return SourceDataset(self.source, self.indices(split), tf, self.label_map)

    def restrict(self, class_ids: list[int]) -> DataBundle:
        """The same data seen by a specialist: only `class_ids`, labels remapped to their positions."""
        n = len(self.source.classes)
        bad = [c for c in class_ids if not 0 <= c < n]
        if bad:
            raise UserError(f"class ids {bad} are outside this dataset's {n} classes")
        return DataBundle(self.source, self.split, self.mean, self.std, self.input_size, list(class_ids))


def compute_stats(source: Source, train_idx: np.ndarray, limit: int = 2000) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of the training images (a seeded sample of at most `limit`)."""
    rng = np.random.default_rng(0)
    idx = train_idx if len(train_idx) <= limit else rng.choice(train_idx, limit, replace=False)
    ds = SourceDataset(source, idx, transform=None)
    pix = np.concatenate([ds.raw(i).reshape(-1, source.channels).astype(np.float64) / 255.0 for i in range(len(ds))])
    return [round(float(v), 6) for v in pix.mean(0)], [round(float(max(v, 1e-3)), 6) for v in pix.std(0)]


def prepare(spec: str, seed: int = 0, *, split: dict | None = None, download: bool = False,
            image_size: int | None = None, pretrained: bool = False, mean=None, std=None) -> DataBundle:
    """Load `spec`, make (or check) its split, and fix preprocessing. Used by every command."""
    source = load_source(spec, download=download)
    if split is None:
        split = make_split(source, seed)
    else:
        check_split(split, source)
    if image_size is not None and image_size <= 0:
        raise UserError(f"--image-size must be positive, got {image_size}")
    size = (image_size, image_size) if image_size else tuple(source.size)
    if mean is None:
        if pretrained and source.channels == 3:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            mean, std = compute_stats(source, np.asarray(split["train"]))
    return DataBundle(source, split, list(mean), list(std), size, list(range(len(source.classes))))


def stack(ds: SourceDataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `limit` items of an eval dataset as one batch (x, y)."""
    n = len(ds) if limit is None else min(limit, len(ds))
    xs, ys = zip(*(ds[i] for i in range(n)), strict=True) if n else ((), ())
    return torch.stack(xs), torch.as_tensor(ys)
