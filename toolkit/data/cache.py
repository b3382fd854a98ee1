"""The image cache of a file-backed source (`--cache-images`): every image decoded and resized to the input size once,
stored in the run as one (N, H, W, C) uint8 file that later epochs, validation, a resumed run and the specialists of
the run memory-map instead of decoding again.

The cache is named by a key over what its pixels depend on: the source's fingerprint (classes, labels, file names),
each file's size and modification time, the channels and the size. A file that changes gives another key, so the old
cache is never read for it (and is deleted when the new one is written); a cache whose header or length does not
match is rebuilt. The data file, then its header, are written atomically: a killed build leaves no cache, only a
temporary that `--resume` removes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_path, write_json
from .datasets import decode_file
from .sources import ImageCache, Source
from .split import fingerprint

log = logging.getLogger(__name__)

CACHE_FORMAT = "edgespec.image-cache/1"
CACHE_DIR = "cache"  # inside a run directory
JPEG_SUFFIXES = {".jpg", ".jpeg"}
BUILD_BATCH = 64


def cache_key(source: Source, size: tuple[int, int]) -> str:
    h = hashlib.sha256()
    h.update(f"{CACHE_FORMAT}\0{source.spec.partition(':')[0]}\0{fingerprint(source)}\0".encode())
    h.update(f"{size[0]}x{size[1]}x{source.channels}\0".encode())
    for rel in source.files:
        st = (source.root / rel).stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def _paths(directory: Path, key: str) -> tuple[Path, Path]:
    stem = f"images-{key[:16]}"
    return directory / f"{stem}.u8", directory / f"{stem}.json"


def _shape(source: Source, size: tuple[int, int]) -> tuple[int, int, int, int]:
    return (len(source), int(size[0]), int(size[1]), source.channels)


def open_cache(directory: Path, source: Source, size: tuple[int, int], key: str | None = None) -> ImageCache | None:
    """The cache in `directory` for `source` at `size`, or None if there is none or it does not match."""
    key = key or cache_key(source, size)
    data, header = _paths(Path(directory), key)
    if not header.is_file():
        return None
    shape = _shape(source, size)
    try:
        info = json.loads(header.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    problem = None
    if info.get("format") != CACHE_FORMAT or info.get("key") != key or tuple(info.get("shape", ())) != shape:
        problem = "its header does not describe this data"
    elif not data.is_file() or data.stat().st_size != int(np.prod(shape)):
        problem = "its data file is missing or of the wrong length"
    if problem:
        log.warning("image cache %s is stale (%s); it will be rebuilt", data, problem)
        return None
    return ImageCache(data, shape, info.get("decoder", "cpu"))


def build_cache(directory: Path, source: Source, size: tuple[int, int], device: torch.device | None = None,
                workers: int = 0, key: str | None = None) -> ImageCache:
    """Decode and resize every image of `source` into `directory` (JPEGs on the GPU when `device` is CUDA and
    torchvision can; everything else in `workers` loader processes)."""
    directory = Path(directory)
    key = key or cache_key(source, size)
    data, header = _paths(directory, key)
    shape = _shape(source, size)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("images-*"):  # caches of earlier versions of the data: edgespec's own files
        if old.name not in (data.name, header.name) and old.suffix in (".u8", ".json"):
            old.unlink(missing_ok=True)
    header.unlink(missing_ok=True)
    log.info("caching %d decoded images at %dx%d in %s", shape[0], shape[1], shape[2], data)
    decoder = "cpu"
    with atomic_path(data) as tmp:
        mm = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
        batches = None
        if device is not None and device.type == "cuda" and all(Path(f).suffix.lower() in JPEG_SUFFIXES
                                                                for f in source.files):
            batches = _jpeg_batches(source, size, device, workers)
            if batches is not None:
                decoder = f"decode_jpeg on {device}"
        for start, batch in batches or _cpu_batches(source, size, workers):
            mm[start:start + len(batch)] = batch.permute(0, 2, 3, 1).numpy()
        mm.flush()
        del mm
    write_json(header, {"format": CACHE_FORMAT, "key": key, "shape": list(shape), "data": source.spec,
                        "decoder": decoder})
    return ImageCache(data, shape, decoder)


def cached_images(directory: Path, source: Source, size: tuple[int, int], *, device: torch.device | None = None,
                  workers: int = 0, reuse: list[Path] = ()) -> ImageCache:
    """A matching cache from `reuse` (read only: the caches of runs this one derives from) or `directory`, else a new
    one built into `directory`."""
    key = cache_key(source, size)
    for d in [*reuse, directory]:
        found = open_cache(d, source, size, key)
        if found is not None:
            log.info("using image cache %s", found.path)
            return found
    return build_cache(directory, source, size, device, workers, key)


def resize_uint8(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) uint8 resized as the per-image transforms resize (to float in [0, 1], bilinear with antialias),
    rounded back to uint8: a cached image differs from the uncached path by at most half a grey level."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    from torchvision.transforms.v2 import functional as TF

    x = TF.resize(img.to(torch.float32).div_(255), list(size), antialias=True)
    return x.mul_(255).round_().clamp_(0, 255).to(torch.uint8)


class _Decoded(torch.utils.data.Dataset):
    def __init__(self, source: Source, size: tuple[int, int]):
        self.source, self.size = source, tuple(size)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> torch.Tensor:
        arr = decode_file(self.source.root / self.source.files[i], self.source.channels)
        return resize_uint8(torch.from_numpy(arr).permute(2, 0, 1), self.size)


def _cpu_batches(source: Source, size: tuple[int, int], workers: int) -> Iterator[tuple[int, torch.Tensor]]:
    loader = torch.utils.data.DataLoader(_Decoded(source, size), batch_size=BUILD_BATCH, num_workers=workers,
                                         collate_fn=torch.stack)
    start = 0
    for batch in loader:
        yield start, batch
        start += len(batch)


class _Encoded(torch.utils.data.Dataset):
    def __init__(self, source: Source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> torch.Tensor:
        import warnings

        from torchvision.io import read_file

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return read_file(str(self.source.root / self.source.files[i]))


def _jpeg_batches(source: Source, size: tuple[int, int], device: torch.device, workers: int
                  ) -> Iterator[tuple[int, torch.Tensor]] | None:
    """JPEGs decoded in batches by `torchvision.io.decode_jpeg` on `device` (nvJPEG on CUDA), resized there; None
    when this torchvision or GPU cannot (the CPU path then decodes). Pixels are within JPEG tolerance of libjpeg's."""
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.GRAY if source.channels == 1 else ImageReadMode.RGB
    loader = torch.utils.data.DataLoader(_Encoded(source), batch_size=BUILD_BATCH, num_workers=workers,
                                         collate_fn=list)

    def decode(encoded: list[torch.Tensor]) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            images = decode_jpeg(encoded, mode=mode, device=device)
        return torch.stack([resize_uint8(im, size) for im in images]).cpu()

    batches = iter(loader)
    first = next(batches, None)
    if first is None:
        return None
    try:
        head = decode(first)
    except (RuntimeError, TypeError, ValueError) as exc:  # no nvJPEG in this build, or a JPEG variant it refuses
        log.info("JPEG decoding on %s is not available (%s); decoding on the CPU", device, exc)
        return None

    def rest() -> Iterator[tuple[int, torch.Tensor]]:
        yield 0, head
        start = len(head)
        for encoded in batches:
            batch = decode(encoded)
            yield start, batch
            start += len(batch)

    return rest()
