"""torch Datasets over a split of a Source, with per-dataset augmentation."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .sources import Source

TORCHVISION_DECODED = {".png", ".jpg", ".jpeg"}  # decoded by torchvision.io (libpng, libjpeg-turbo); others by PIL


def decode_file(path, channels: int) -> np.ndarray:
    """HWC uint8 pixels of an image file with `channels` channels.

    PNG and JPEG files go through `torchvision.io.read_file` and `decode_image` (the same codecs PIL links, without
    PIL's per-image overhead; a PNG decodes to PIL's pixels, a JPEG within a step or two of them). A file whose
    stored layout is not the one wanted (grayscale for an RGB source, alpha, 16-bit, CMYK) and every other format
    goes through PIL's `convert`, which defines what a conversion gives.
    """
    from pathlib import Path

    path = Path(path)
    if path.suffix.lower() in TORCHVISION_DECODED:
        img = _decode_torchvision(path)
        if img is not None and img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == channels:
            return img.permute(1, 2, 0).numpy()
    return decode_pil(path, channels)


def _decode_torchvision(path) -> torch.Tensor | None:
    from torchvision.io import ImageReadMode, decode_image, read_file

    with warnings.catch_warnings():  # torchvision 0.29 marks its decoders deprecated in favour of torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return decode_image(read_file(str(path)), mode=ImageReadMode.UNCHANGED)
        except RuntimeError:  # a variant libpng/libjpeg refuses (PIL may still read it, or says why not)
            return None


def decode_pil(path, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.array(im.convert("L" if channels == 1 else "RGB"))
    return arr[..., None] if arr.ndim == 2 else arr


@dataclass(frozen=True)
class AugmentPlan:
    """Which augmentation a source gets in training: one table for the per-image and the whole-batch paths."""

    kind: str  # affine | crop | resized_crop
    degrees: float = 0.0
    translate: tuple[float, float] = (0.0, 0.0)
    scale: tuple[float, float] = (1.0, 1.0)
    padding: int = 0
    flip: bool = False


def augment_plan(augment: str, size: tuple[int, int]) -> AugmentPlan:
    if augment == "digits":
        return AugmentPlan("affine", degrees=8, translate=(0.1, 0.1), scale=(0.9, 1.1))
    if augment == "handwriting":
        return AugmentPlan("affine", degrees=10, translate=(0.1, 0.1))
    if augment == "synthetic":
        return AugmentPlan("affine", translate=(0.06, 0.06))
    if size[0] >= 64:
        return AugmentPlan("resized_crop", flip=True)
    return AugmentPlan("crop", padding=max(1, size[0] // 8), flip=True)


def build_transform(augment: str, train: bool, size: tuple[int, int], mean: list[float], std: list[float]):
    from torchvision.transforms import v2

    steps: list = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    steps.append(v2.Resize(size, antialias=True))
    if train:
        plan = augment_plan(augment, size)
        if plan.kind == "affine":
            steps.append(v2.RandomAffine(degrees=plan.degrees, translate=plan.translate,
                                         scale=None if plan.scale == (1.0, 1.0) else plan.scale))
        elif plan.kind == "resized_crop":
            steps.append(v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True))
        else:
            steps.append(v2.RandomCrop(size, padding=plan.padding))
        if plan.flip:
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
        if self.source.cache is not None:
            return self.source.cache.image(j)
        return decode_file(self.source.root / self.source.files[j], self.source.channels)

    def label(self, i: int) -> int:
        y = int(self.source.labels[self.indices[i]])
        return self.label_map[y] if self.label_map is not None else y

    @property
    def labels(self) -> np.ndarray:
        y = self.source.labels[self.indices]
        return np.asarray([self.label_map[int(v)] for v in y]) if self.label_map is not None else y

    def __getitem__(self, key: int | tuple[int, int]):
        """`key` is an index, or (index, seed) from a `SeededSampler`: the image's augmentation then depends on the
        seed alone, not on which loader worker draws it or what it drew before."""
        if isinstance(key, tuple):
            i, seed = key
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self.transform(self.raw(i)), self.label(i)
        return self.transform(self.raw(key)), self.label(key)
