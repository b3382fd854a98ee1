"""File-backed data: torchvision decoding against PIL, the memory-mapped image cache (hit, invalidation, stale
files, specialists reading the generalist's), resume with the cache, and loader workers reproducible by seed."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from toolkit.data import prepare
from toolkit.data.cache import _cpu_batches, _jpeg_batches, build_cache, cache_key, cached_images, open_cache
from toolkit.data.datasets import decode_file, decode_pil
from toolkit.train import TrainConfig, train
from toolkit.train.data import attach_image_cache, default_workers, train_loader
from toolkit.train.distributed import DistInfo

CPU = torch.device("cpu")
ONE = DistInfo()


def _folder(root, n: int = 8, size: int = 12, suffix: str = ".png", seed: int = 0, vary: bool = True):
    """Two classes of noisy images; with `vary` some images have another size, so the cache has to resize."""
    rng = np.random.default_rng(seed)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            side = size + (4 if vary and i % 3 == 0 else 0)
            img = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / c / f"{i}{suffix}", **({"quality": 90} if suffix == ".jpg" else {}))
    return root


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_decode_file_gives_pil_pixels_for_png(tmp_path, mode):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (9, 7, 3) if mode == "RGB" else (9, 7), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    channels = 3 if mode == "RGB" else 1
    got = decode_file(tmp_path / "x.png", channels)
    assert got.dtype == np.uint8 and got.shape == (9, 7, channels)
    assert np.array_equal(got, decode_pil(tmp_path / "x.png", channels))
    if mode == "L":  # grayscale file into an RGB source: PIL's conversion, also through decode_file
        assert np.array_equal(decode_file(tmp_path / "x.png", 3), decode_pil(tmp_path / "x.png", 3))


def test_decode_file_gives_pil_pixels_within_jpeg_tolerance(tmp_path):
    yy, xx = np.mgrid[0:32, 0:40]
    img = np.stack([xx * 6, yy * 7, (xx + yy) * 3], -1).clip(0, 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "x.jpg", quality=90)
    got, ref = decode_file(tmp_path / "x.jpg", 3).astype(int), decode_pil(tmp_path / "x.jpg", 3).astype(int)
    assert got.shape == ref.shape == (32, 40, 3)
    assert np.abs(got - ref).max() <= 3 and np.abs(got - ref).mean() < 0.5  # two libjpeg builds, one IDCT


def test_palette_png_falls_back_to_pil(tmp_path):
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8)).convert("P").save(tmp_path / "p.png")
    assert np.array_equal(decode_file(tmp_path / "p.png", 3), decode_pil(tmp_path / "p.png", 3))


def test_cache_holds_the_resized_images_and_a_hit_returns_them_identically(tmp_path):
    bundle = prepare(f"imagefolder:{_folder(tmp_path / 'data')}")
    src, size = bundle.source, bundle.input_size
    cache = cached_images(tmp_path / "cache", src, size)
    assert cache.shape == (len(src), *size, 3)
    ds = bundle.dataset("val")
    for i in range(len(ds)):  # the per-image path: decode, to float, resize (antialias), within half a grey level
        j = int(ds.indices[i])
        x = torch.from_numpy(decode_file(src.root / src.files[j], 3)).permute(2, 0, 1).float() / 255
        from torchvision.transforms.v2 import functional as TF

        want = TF.resize(x, list(size), antialias=True).permute(1, 2, 0).numpy() * 255
        assert np.abs(cache.image(j).astype(np.float64) - want).max() <= 0.5 + 1e-4
    mtime = cache.path.stat().st_mtime_ns
    again = cached_images(tmp_path / "cache", src, size)
    assert again.path == cache.path and cache.path.stat().st_mtime_ns == mtime  # opened, not rebuilt
    assert np.array_equal(np.asarray(again.array()), np.asarray(cache.array()))
    src.cache = again
    ref = bundle.dataset("val")
    a = torch.stack([ref[i][0] for i in range(len(ref))])
    b = torch.stack([bundle.dataset("val")[i][0] for i in range(len(ref))])
    assert torch.equal(a, b)


def test_cache_invalidates_when_a_file_changes_and_rebuilds_a_damaged_one(tmp_path):
    root = _folder(tmp_path / "data", vary=False)
    bundle = prepare(f"imagefolder:{root}")
    src, size = bundle.source, bundle.input_size
    old = cached_images(tmp_path / "cache", src, size)
    before = np.array(old.array())
    key = cache_key(src, size)
    j = src.files.index("a/0.png")
    Image.fromarray(np.full((12, 12, 3), 7, np.uint8)).save(root / "a" / "0.png")
    os.utime(root / "a" / "0.png", ns=(1, 1))  # another mtime even on a coarse clock
    assert cache_key(src, size) != key and open_cache(tmp_path / "cache", src, size) is None
    new = cached_images(tmp_path / "cache", src, size)
    assert new.path != old.path and not old.path.exists()  # the stale cache is gone
    assert (new.image(j) == 7).all()
    other = [k for k in range(len(src)) if k != j]
    assert np.array_equal(new.take(other), before[other]) and not (before[j] == 7).all()
    with open(new.path, "r+b") as fh:  # a truncated data file is not used
        fh.truncate(10)
    assert open_cache(tmp_path / "cache", src, size) is None
    rebuilt = cached_images(tmp_path / "cache", src, size)
    assert rebuilt.path.stat().st_size == rebuilt.nbytes and (rebuilt.image(j) == 7).all()


def test_jpeg_batch_decoding_path_matches_the_cpu_decoder(tmp_path):
    """The GPU (nvJPEG) path of the cache build, run here with torchvision's CPU batch decoder: same layout, pixels
    within JPEG tolerance of the per-file path. On CUDA the same code decodes on the GPU."""
    bundle = prepare(f"imagefolder:{_folder(tmp_path / 'data', n=5, suffix='.jpg')}")
    src, size = bundle.source, bundle.input_size
    got = torch.cat([b for _, b in _jpeg_batches(src, size, CPU, 0)])
    ref = torch.cat([b for _, b in _cpu_batches(src, size, 0)])
    assert got.shape == ref.shape == (len(src), 3, *size) and got.dtype == torch.uint8
    assert (got.int() - ref.int()).abs().float().mean() < 1.0


def _cfg(root, **kw):
    return TrainConfig(data=f"imagefolder:{root}", model="smallcnn-w4", epochs=2, batch_size=8, seed=3, workers=0,
                       device="cpu", cache_images=True, **kw)


def test_training_with_the_cache_resumes_bit_exactly_and_specialists_read_the_generalists_cache(tmp_path,
                                                                                                killed_in_epoch):
    root = _folder(tmp_path / "data", n=10)
    full = train(_cfg(root), tmp_path / "full")
    caches = list((tmp_path / "full" / "cache").glob("images-*.u8"))
    assert len(caches) == 1 and full["history"][-1]["epoch"] == 2

    with killed_in_epoch(2):
        train(_cfg(root), tmp_path / "cut")
    train(_cfg(root), tmp_path / "cut", resume=True)
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    from toolkit.runs import Run

    generalist = Run.open(tmp_path / "full")
    bundle = generalist.data().restrict([1])
    info = {"parent": {"lineage": [str(generalist.path.resolve())]}}
    attach_image_cache(bundle, _cfg(root), tmp_path / "spec", info, CPU, ONE)
    assert bundle.source.cache.path == caches[0]  # the generalist's, not a copy
    assert not (tmp_path / "spec").exists()


def _batches(bundle, cfg, seed: int) -> list[torch.Tensor]:
    ds = bundle.dataset("train", train_transform=True)
    gen = torch.Generator()
    loader, _ = train_loader(bundle, ds, cfg, CPU, ONE, 4, gen)
    gen.manual_seed(seed)
    return [x for x, _ in loader]


def test_file_loader_with_two_workers_is_reproducible_and_matches_in_process_loading(tmp_path):
    bundle = prepare(f"imagefolder:{_folder(tmp_path / 'data', n=8)}")
    two = TrainConfig(data="x", workers=2)
    a, b = _batches(bundle, two, 5), _batches(bundle, two, 5)
    assert len(a) == len(b) > 1 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    zero = _batches(bundle, TrainConfig(data="x", workers=0), 5)
    assert all(torch.equal(x, y) for x, y in zip(a, zero, strict=True))
    assert not torch.equal(a[0], _batches(bundle, two, 6)[0])
    loader, _ = train_loader(bundle, bundle.dataset("train", True), TrainConfig(data="x"), CPU, ONE, 6,
                             torch.Generator())
    assert loader.num_workers == default_workers() >= 1 and loader.persistent_workers and not loader.pin_memory


def test_a_cached_split_is_augmented_in_whole_batches(tmp_path):
    from toolkit.data.batched import BatchedLoader

    bundle = prepare(f"imagefolder:{_folder(tmp_path / 'data', n=6)}")
    bundle.source.cache = build_cache(tmp_path / "cache", bundle.source, bundle.input_size)
    loader, _ = train_loader(bundle, bundle.dataset("train", True), TrainConfig(data="x"), CPU, ONE, 4,
                             torch.Generator())
    assert isinstance(loader, BatchedLoader)
    x, _ = next(iter(loader))
    assert x.shape == (4, 3, *bundle.input_size)
