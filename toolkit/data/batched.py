"""Whole-batch augmentation for sources held in memory: the uint8 images live as one tensor on the training device
and every step augments a batch there with torch ops. On CUDA a batch never leaves the GPU.

The transforms are the families `datasets.build_transform` applies image by image (RandomAffine with nearest
sampling and zero fill, RandomCrop with zero padding, RandomResizedCrop, horizontal flip) with torchvision's
parameter distributions; given the same parameters a batch comes out as torchvision's per-image kernels make it
(tests/unit/test_batched_data.py checks both). Parameters are drawn on the CPU from a generator the training loop
seeds per epoch, so a run is reproducible, a resumed run continues bit-exactly, and CPU and CUDA draw the same.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import AugmentPlan, SourceDataset, augment_plan

log = logging.getLogger(__name__)

DEVICE_BUDGET = 0.25  # at most this share of the free GPU memory holds a data set; beyond, it stays in pinned RAM


@dataclass
class AffineParams:
    angle: torch.Tensor  # degrees, (B,)
    tx: torch.Tensor  # whole pixels, (B,)
    ty: torch.Tensor
    scale: torch.Tensor


def draw_affine(plan: AugmentPlan, n: int, h: int, w: int, gen: torch.Generator) -> AffineParams:
    """torchvision's RandomAffine draws: angle and scale uniform, translation uniform then rounded to pixels."""
    u = torch.rand(4, n, generator=gen, dtype=torch.float64)
    angle = (u[0] * 2 - 1) * plan.degrees
    tx = torch.round((u[1] * 2 - 1) * plan.translate[0] * w)
    ty = torch.round((u[2] * 2 - 1) * plan.translate[1] * h)
    lo, hi = plan.scale
    return AffineParams(angle, tx, ty, lo + u[3] * (hi - lo))


def affine_theta(p: AffineParams) -> torch.Tensor:
    """(B, 2, 3) inverse affine matrices about the image centre, as torchvision's `_get_inverse_affine_matrix`."""
    rot = torch.deg2rad(p.angle)
    cos, sin = torch.cos(rot) / p.scale, torch.sin(rot) / p.scale
    m0, m1, m3, m4 = cos, sin, -sin, cos
    m2 = m0 * -p.tx + m1 * -p.ty
    m5 = m3 * -p.tx + m4 * -p.ty
    return torch.stack([m0, m1, m2, m3, m4, m5], 1).view(-1, 2, 3)


def affine_batch(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour affine warp with zero fill, pixel centres as torchvision's `_affine_grid` places them."""
    b, _, h, w = x.shape
    theta = theta.to(x.device, x.dtype)
    xs = torch.linspace(-w * 0.5 + 0.5, w * 0.5 + 0.5 - 1, steps=w, device=x.device, dtype=x.dtype)
    ys = torch.linspace(-h * 0.5 + 0.5, h * 0.5 + 0.5 - 1, steps=h, device=x.device, dtype=x.dtype)
    base = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, device=x.device, dtype=x.dtype)],
                       -1).view(1, h * w, 3).expand(b, -1, -1)
    scaled = theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], device=x.device, dtype=x.dtype)
    grid = torch.bmm(base, scaled).view(b, h, w, 2)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def shift_batch(x: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """The nearest-neighbour affine warp of a pure translation by whole pixels (zero fill), as a padded crop."""
    pad = int(max(tx.abs().max(), ty.abs().max())) if len(tx) else 0
    if pad == 0:
        return x
    return crop_batch(x, pad, (pad - ty).long(), (pad - tx).long())


def draw_crop_offsets(n: int, padding: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """RandomCrop after zero padding by `padding` on every side: top and left uniform in 0..2*padding."""
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=gen)
    return offsets[0], offsets[1]


def crop_batch(x: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    wp = w + 2 * padding
    rows = top.to(x.device)[:, None] + torch.arange(h, device=x.device)
    cols = left.to(x.device)[:, None] + torch.arange(w, device=x.device)
    flat = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)  # one gather, NCHW kept
    return xp.reshape(b, c, -1).gather(2, flat).view(b, c, h, w)


def draw_resized_crops(n: int, h: int, w: int, gen: torch.Generator, scale=(0.5, 1.0),
                       ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """(B, 4) boxes (top, left, height, width) by torchvision's RandomResizedCrop rule: up to ten tries of an area
    and a log-uniform aspect ratio, the first that fits wins, otherwise the largest central crop of allowed ratio."""
    area = h * w
    u = torch.rand(2, n, 10, generator=gen, dtype=torch.float64)
    target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
    log_r = math.log(ratio[0]) + u[1] * (math.log(ratio[1]) - math.log(ratio[0]))
    aspect = torch.exp(log_r)
    cw = torch.round(torch.sqrt(target * aspect))
    ch = torch.round(torch.sqrt(target / aspect))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    in_ratio = w / h
    if in_ratio < ratio[0]:
        fw, fh = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        fh, fw = h, int(round(h * ratio[1]))
    else:
        fw, fh = w, h
    pick = first.clamp(min=0)[:, None]
    bh = torch.where(first >= 0, ch.gather(1, pick)[:, 0], torch.full((n,), float(fh))).long()
    bw = torch.where(first >= 0, cw.gather(1, pick)[:, 0], torch.full((n,), float(fw))).long()
    v = torch.rand(2, n, generator=gen, dtype=torch.float64)
    top = torch.where(first >= 0, (v[0] * (h - bh + 1)).long().clamp(max=h - bh), (h - bh) // 2)
    left = torch.where(first >= 0, (v[1] * (w - bw + 1)).long().clamp(max=w - bw), (w - bw) // 2)
    return torch.stack([top, left, bh, bw], 1)


def resized_crop_batch(x: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of each box to `size` with the source coordinates `interpolate` uses (half-pixel centres,
    clamped inside the box). Boxes are never larger than the image, so antialiasing has nothing to do."""
    b, _, h, w = x.shape
    oh, ow = size
    boxes = boxes.to(x.device, torch.float32)
    top, left, bh, bw = boxes.unbind(1)
    oy = torch.arange(oh, device=x.device, dtype=torch.float32)
    ox = torch.arange(ow, device=x.device, dtype=torch.float32)
    sy = ((oy[None] + 0.5) * (bh / oh)[:, None] - 0.5).clamp(min=0)
    sx = ((ox[None] + 0.5) * (bw / ow)[:, None] - 0.5).clamp(min=0)
    sy = torch.minimum(sy, (bh - 1)[:, None]) + top[:, None]
    sx = torch.minimum(sx, (bw - 1)[:, None]) + left[:, None]
    gy = (2 * sy + 1) / h - 1
    gx = (2 * sx + 1) / w - 1
    grid = torch.stack([gx[:, None, :].expand(b, oh, ow), gy[:, :, None].expand(b, oh, ow)], -1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class BatchTransform:
    """The per-image pipeline of `build_transform` applied to a whole uint8 batch: scale to [0, 1], resize,
    augment (training only), normalise."""

    def __init__(self, augment: str, train: bool, size: tuple[int, int], mean: list[float], std: list[float]):
        self.plan = augment_plan(augment, size) if train else None
        self.size = tuple(size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        x = images.to(torch.float32).mul_(1.0 / 255)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        if self.plan is not None:
            x = self.augment(x, gen)
        return x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))

    def augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        plan, (b, _, h, w) = self.plan, x.shape
        if plan.kind == "affine":
            params = draw_affine(plan, b, h, w, gen)
            if plan.degrees == 0 and plan.scale == (1.0, 1.0):  # whole-pixel shifts: the same pixels, no sampling
                x = shift_batch(x, params.tx, params.ty)
            else:
                x = affine_batch(x, affine_theta(params).float())
        elif plan.kind == "crop":
            x = crop_batch(x, plan.padding, *draw_crop_offsets(b, plan.padding, gen))
        elif plan.kind == "resized_crop":
            x = resized_crop_batch(x, draw_resized_crops(b, h, w, gen), self.size)
        if plan.flip:
            flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x


def image_tensor(ds: SourceDataset) -> torch.Tensor:
    """The dataset's images as one (N, C, H, W) uint8 tensor, in dataset order (from the image cache for files)."""
    source = ds.source
    images = source.images[ds.indices] if source.images is not None else source.cache.take(ds.indices)
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def place(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """On the GPU when the data set fits in a share of its free memory, else in pinned host memory."""
    if device.type != "cuda":
        return images
    free, _ = torch.cuda.mem_get_info(device)
    if images.numel() <= DEVICE_BUDGET * free:
        return images.to(device)
    log.info("%.0f MiB of images exceed %.0f%% of the GPU's free memory; batches are copied from pinned memory",
             images.numel() / 2**20, DEVICE_BUDGET * 100)
    return images.pin_memory()


class BatchedLoader:
    """Iterates (x, y) batches like a DataLoader over `ds`, without per-image work.

    `sampler` gives the order (the same RandomSampler/DistributedSampler a DataLoader would use, so the order of
    images is what it was); `generator` (reseeded by the loop every epoch) also seeds the epoch's augmentation.
    """

    def __init__(self, ds: SourceDataset, transform: BatchTransform, batch_size: int, sampler: Iterable[int],
                 device: torch.device, *, drop_last: bool = False, generator: torch.Generator | None = None,
                 rank: int = 0):
        self.dataset = ds
        self.transform = transform
        self.batch_size = batch_size
        self.sampler = sampler
        self.drop_last = drop_last
        self.generator = generator
        self.rank = rank
        self.device = device
        self.images = place(image_tensor(ds), device)
        self.labels = torch.as_tensor(np.asarray(ds.labels, dtype=np.int64)).to(device)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # a DataLoader draws its workers' base seed before the sampler's permutation: drawn the same way here, the
        # order of images is the DataLoader's, and the seed becomes the epoch's augmentation seed
        seed = int(torch.empty((), dtype=torch.int64).random_(generator=self.generator)) \
            if self.generator is not None else 0
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long)
        gen = torch.Generator().manual_seed(seed + self.rank)
        for k in range(len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            x = self.images[idx.to(self.images.device)]
            if x.device != self.device:
                x = x.to(self.device, non_blocking=True)
            yield self.transform(x, gen), self.labels[idx.to(self.device)]

