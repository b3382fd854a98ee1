"""The training loop's data path: whole batches on the device for sources in memory, loader workers for files."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

from ..data import DataBundle
from ..data.batched import BatchedLoader, BatchTransform
from ..data.datasets import SourceDataset
from .config import TrainConfig
from .distributed import DistInfo

log = logging.getLogger(__name__)

MAX_WORKERS = 8


def default_workers(world_size: int = 1) -> int:
    """Loader workers per process for file-backed data: the CPUs this process may use, less one for the loop."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_WORKERS, cpus // max(1, world_size) - 1))


class SeededSampler(Sampler):
    """(index, seed) pairs over `base`'s order: each image's augmentation seed is fixed by the epoch's generator
    and its position, so results depend neither on the number of workers nor on what a persistent worker drew in
    earlier epochs, and a resumed run draws what the uninterrupted one drew."""

    def __init__(self, base: Sampler, generator: torch.Generator, rank: int = 0):
        self.base = base
        self.generator = generator
        self.rank = rank

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = list(iter(self.base))
        seed = int(torch.randint(0, 2**40, (), generator=self.generator)) + self.rank * 2**41
        return iter([(int(i), seed + k) for k, i in enumerate(order)])


def train_loader(bundle: DataBundle, ds: SourceDataset, cfg: TrainConfig, device: torch.device, dist_info: DistInfo,
                 batch_size: int, gen: torch.Generator, sampler: Sampler | None = None
                 ) -> tuple[BatchedLoader | DataLoader, DistributedSampler | None]:
    """Batches of augmented training images, and the sampler whose epoch to set under torchrun; `gen`, reseeded by
    the loop every epoch, fixes the order and the augmentation draws. `sampler` replaces the uniform order (the
    importance sampler of a target-domain specialist; one process only)."""
    base = DistributedSampler(ds, dist_info.world_size, dist_info.rank, shuffle=True, seed=cfg.seed) \
        if dist_info.enabled else sampler if sampler is not None else RandomSampler(ds, generator=gen)
    dist_sampler = base if dist_info.enabled else None
    drop_last = len(ds) > batch_size
    if bundle.source.images is not None:
        if cfg.workers:
            log.info("the data is in memory and augmented in whole batches on %s; --workers %d is not needed",
                     device, cfg.workers)
        tf = BatchTransform(bundle.source.augment, True, bundle.input_size, bundle.mean, bundle.std)
        return BatchedLoader(ds, tf, batch_size, base, device, drop_last=drop_last, generator=gen,
                             rank=dist_info.rank), dist_sampler
    workers = default_workers(dist_info.world_size) if cfg.workers is None else cfg.workers
    return DataLoader(ds, batch_size=batch_size, sampler=SeededSampler(base, gen, dist_info.rank),
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                      drop_last=drop_last), dist_sampler


def eval_workers(bundle: DataBundle, cfg: TrainConfig, world_size: int = 1) -> int:
    """Workers for the validation loader: files are decoded in workers as for training; memory needs none."""
    if bundle.source.images is not None:
        return 0
    return default_workers(world_size) if cfg.workers is None else cfg.workers
