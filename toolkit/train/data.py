"""The training loop's data path: whole batches on the device for sources in memory, loader workers for files."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

from ..data import DataBundle
from ..data.batched import BatchedLoader, BatchTransform
from ..data.cache import CACHE_DIR, cached_images
from ..data.datasets import SourceDataset
from .config import TrainConfig
from .distributed import DistInfo, barrier

log = logging.getLogger(__name__)

MAX_WORKERS = 8
# Models that train faster on the CPU in the channels_last memory format, measured on this host with
# `benchmarks/scripts/train_speed.py --channels-last` on the AVX-512 EPYC host (bare loop, batch 128, 1 thread, 6
# interleaved rounds, shared machine): smallcnn at 28 px 1.32x (1.20-1.60x, faster in every round); resnet18 at 32 px
# 1.04x (0.74-1.15x; 0.67x with 2 threads), not a gain. Models not measured stay contiguous on the CPU. On CUDA
# channels_last is the default for every model.
CPU_CHANNELS_LAST: frozenset[str] = frozenset({"smallcnn"})
MEMORY_BUDGET = 0.25  # a cached training split up to this share of the available RAM is augmented in whole batches


def use_channels_last(device: torch.device, model: str, enabled: bool = True) -> bool:
    """Whether training `model` on `device` uses channels_last (TrainConfig.channels_last allows it)."""
    return enabled and (device.type == "cuda" or model in CPU_CHANNELS_LAST)


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
    if in_memory(bundle, ds):
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
    """Workers for the validation loader: files are decoded in workers as for training; memory (or the image
    cache, a memory map) needs none."""
    if bundle.source.images is not None or bundle.source.cache is not None:
        return 0
    return default_workers(world_size) if cfg.workers is None else cfg.workers


def in_memory(bundle: DataBundle, ds: SourceDataset) -> bool:
    """Whether `ds` is augmented in whole batches on the device: sources held in memory, and cached files whose
    training split fits a share of the available RAM (a larger cache is read image by image from its memory map)."""
    if bundle.source.images is not None:
        return True
    cache = bundle.source.cache
    if cache is None:
        return False
    need = cache.nbytes * len(ds) / max(1, len(bundle.source))
    avail = available_memory()
    if avail is not None and need > MEMORY_BUDGET * avail:
        log.info("the cached training images (%.0f MiB) exceed %.0f%% of the available memory; they are read from "
                 "the cache image by image", need / 2**20, MEMORY_BUDGET * 100)
        return False
    return True


def attach_image_cache(bundle: DataBundle, cfg: TrainConfig, out: Path, run_info: dict[str, Any],
                       device: torch.device, dist_info: DistInfo) -> None:
    """`cache_images`: give `bundle`'s file-backed source its image cache (toolkit.data.cache), the one the run's
    first ancestor (the generalist a specialist derives from) holds if it matches, else one in this run's `cache/`,
    built now if absent or stale. Later epochs, validation and a resumed run read it instead of decoding files."""
    source = bundle.source
    if not getattr(cfg, "cache_images", False) or source.cache is not None:
        return
    if source.files is None:
        log.info("--cache-images: %s is held in memory already; there is nothing to cache", source.spec)
        return
    lineage = (run_info.get("parent") or {}).get("lineage") or []
    reuse = [Path(lineage[0]) / CACHE_DIR] if lineage else []
    workers = default_workers(dist_info.world_size) if cfg.workers is None else cfg.workers

    def find():
        return cached_images(Path(out) / CACHE_DIR, source, tuple(bundle.input_size), device=device, workers=workers,
                             reuse=reuse)

    cache = find() if dist_info.is_main else None
    barrier(dist_info)
    source.cache = cache if cache is not None else find()  # other ranks open what rank 0 wrote


def available_memory() -> int | None:
    """Bytes of RAM available without swapping (MemAvailable: free memory plus reclaimable page cache)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
