"""Where images come from. Each loader returns a `Source`: labels plus pixels (in memory) or files (on disk)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError, unknown_name

log = logging.getLogger(__name__)

IMAGEFOLDER_KINDS = {None: "imagefolder", "RGB": "imagefolder-rgb", "L": "imagefolder-gray"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


@dataclass
class Source:
    """A labelled image collection before it is split."""

    kind: str  # digits | synthetic | imagefolder | torchvision
    spec: str
    classes: list[str]
    labels: np.ndarray  # (N,) int64
    channels: int
    size: tuple[int, int]  # native (H, W); files are resized to this
    images: np.ndarray | None = None  # (N, H, W, C) uint8 when held in memory
    files: list[str] | None = None  # paths relative to root when read from disk
    root: Path | None = None
    predefined: dict[str, np.ndarray] | None = None  # split name -> indices the source already fixes
    groups: dict[str, list[str]] = field(default_factory=dict)  # semantic groups the source knows of
    augment: str = "natural"  # digits | synthetic | natural | handwriting
    cache: ImageCache | None = None  # files decoded and resized once, memory-mapped (toolkit.data.cache)

    def __len__(self) -> int:
        return len(self.labels)


class ImageCache:
    """Read side of an image cache: every image of a file-backed source, decoded and resized to `shape[1:3]`, in one
    (N, H, W, C) uint8 file opened read-only as a memory map. The map opens lazily and is not pickled, so loader
    workers share the operating system's page cache instead of copying the array."""

    def __init__(self, path: Path, shape: tuple[int, int, int, int], decoder: str = "cpu"):
        self.path = Path(path)
        self.shape = tuple(shape)
        self.decoder = decoder
        self._map: np.ndarray | None = None

    def array(self) -> np.ndarray:
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r", shape=self.shape)
        return self._map

    def image(self, j: int) -> np.ndarray:
        """One HWC image, copied out of the map (writable, as a decoded image is)."""
        return np.array(self.array()[j])

    def take(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.array()[np.asarray(indices, dtype=np.int64)])

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None}


def load_digits() -> Source:
    """scikit-learn's bundled 8x8 handwritten digits: 1797 images, no download."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (N, 8, 8, 1)
    return Source(
        kind="digits",
        spec="digits",
        classes=[str(i) for i in range(10)],
        labels=d.target.astype(np.int64),
        channels=1,
        size=(8, 8),
        images=images,
        augment="digits",
    )


SYNTH_PATTERNS = ["hstripes", "vstripes", "diagonal", "rings", "checks", "antidiagonal", "spots", "blank"]
SYNTH_MARKS = ["nw", "ne", "sw", "se", "centre", "n", "s", "w", "e"]


def load_synthetic(options: dict[str, str]) -> Source:
    """Deterministic images whose classes come in semantic groups.

    A group is a texture (stripes, rings, ...) with its own colour; the classes inside a group share it and
    differ only by where a faint square mark sits. Classes within a group look alike, groups differ, so a
    specialist for one group has something real to gain over a generalist.
    """
    n_groups = _int_opt(options, "groups", 4, 2, len(SYNTH_PATTERNS))
    per_group = _int_opt(options, "classes", 3, 2, len(SYNTH_MARKS))
    per_class = _int_opt(options, "per_class", 150, 10, 100_000)
    size = _int_opt(options, "size", 16, 8, 256)
    noise = _float_opt(options, "noise", 0.35, 0.0, 10.0)
    data_seed = _int_opt(options, "seed", 0, 0, 2**31 - 1)
    rng = np.random.default_rng(data_seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size

    classes, labels, images, groups = [], [], [], {}
    for g in range(n_groups):
        pattern = SYNTH_PATTERNS[g]
        hue = np.array([np.cos(2 * np.pi * g / n_groups), np.cos(2 * np.pi * (g / n_groups + 1 / 3)),
                        np.cos(2 * np.pi * (g / n_groups + 2 / 3))], dtype=np.float32) * 0.25 + 0.5
        groups[pattern] = []
        for c in range(per_group):
            name = f"{pattern}-{SYNTH_MARKS[c]}"
            groups[pattern].append(name)
            cls = len(classes)
            classes.append(name)
            for _ in range(per_class):
                phase = rng.uniform(0, 2 * np.pi)
                tex = _texture(pattern, xx, yy, phase)
                img = 0.5 + 0.35 * tex[..., None] * (hue[None, None, :] * 2 - 0.5)
                _draw_mark(img, SYNTH_MARKS[c], size, rng)
                img += rng.normal(0, noise * 0.3, img.shape).astype(np.float32)
                img *= rng.uniform(0.8, 1.2)
                images.append(np.clip(img * 255, 0, 255).astype(np.uint8))
                labels.append(cls)
    spec = "synthetic" + (":" + ",".join(f"{k}={v}" for k, v in sorted(options.items())) if options else "")
    return Source(
        kind="synthetic",
        spec=spec,
        classes=classes,
        labels=np.asarray(labels, dtype=np.int64),
        channels=3,
        size=(size, size),
        images=np.stack(images),
        groups=groups,
        augment="synthetic",
    )


def _texture(pattern: str, xx: np.ndarray, yy: np.ndarray, phase: float) -> np.ndarray:
    f = 2 * np.pi * 3
    if pattern == "hstripes":
        return np.sin(f * yy + phase)
    if pattern == "vstripes":
        return np.sin(f * xx + phase)
    if pattern == "diagonal":
        return np.sin(f * (xx + yy) / 1.4 + phase)
    if pattern == "antidiagonal":
        return np.sin(f * (xx - yy) / 1.4 + phase)
    if pattern == "rings":
        return np.sin(f * 1.5 * np.hypot(xx - 0.5, yy - 0.5) + phase)
    if pattern == "checks":
        return np.sign(np.sin(f * xx + phase)) * np.sign(np.sin(f * yy))
    if pattern == "spots":
        return np.sin(f * xx + phase) * np.sin(f * yy + phase)
    return np.zeros_like(xx)


def _draw_mark(img: np.ndarray, where: str, size: int, rng: np.random.Generator) -> None:
    m = max(2, size // 5)
    lo, mid, hi = 1, (size - m) // 2, size - m - 1
    pos = {"nw": (lo, lo), "ne": (lo, hi), "sw": (hi, lo), "se": (hi, hi), "centre": (mid, mid),
           "n": (lo, mid), "s": (hi, mid), "w": (mid, lo), "e": (mid, hi)}[where]
    y, x = (int(np.clip(p + rng.integers(-1, 2), 0, size - m)) for p in pos)
    img[y:y + m, x:x + m, :] += 0.45


def load_imagefolder(path: str, mode: str | None = None) -> Source:
    """Class-per-folder images; `train/`, `val/`, `test/` subfolders fix the split when present.

    `mode` "RGB" or "L" converts every image to that mode (`imagefolder-rgb:`/`imagefolder-gray:`).
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"image folder not found: {root}; pass --data imagefolder:PATH with an existing directory")
    if not root.is_dir():
        raise UserError(f"{root} is not a directory; imagefolder: expects one folder per class")
    split_dirs = [s for s in ("train", "val", "test") if (root / s).is_dir()]
    bases = [(s, root / s) for s in split_dirs] if "train" in split_dirs else [(None, root)]
    classes = sorted({d.name for _, b in bases for d in b.iterdir() if d.is_dir() and not d.name.startswith(".")})
    if not classes:
        raise UserError(f"no class folders under {root}; put the images of each class in a folder of its own")
    files, labels, split_of = [], [], []
    for split, base in bases:
        for ci, name in enumerate(classes):
            cdir = base / name
            found = sorted(p for p in cdir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if cdir.is_dir() else []
            if not found and split in (None, "train"):
                raise UserError(f"class folder {cdir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                                "add images or remove the folder")
            for p in found:
                _check_image_path(p)
            files += [str(p.relative_to(root)) for p in found]
            labels += [ci] * len(found)
            split_of += [split] * len(found)
    channels, size = _scan_images(root, files, mode)
    predefined = None
    if split_dirs and "train" in split_dirs:
        arr = np.asarray(split_of, dtype=object)
        predefined = {s: np.flatnonzero(arr == s) for s in split_dirs}
    return Source(
        kind="imagefolder",
        spec=f"{IMAGEFOLDER_KINDS[mode]}:{root}",
        classes=classes,
        labels=np.asarray(labels, dtype=np.int64),
        channels=channels,
        size=size,
        files=files,
        root=root,
        predefined=predefined,
    )


def _scan_images(root: Path, files: list[str], mode: str | None = None) -> tuple[int, tuple[int, int]]:
    """Decode every image once so an unreadable file is reported before anything is written.

    Mixed colour modes (a grayscale or RGBA image among RGB ones) are refused: converting them silently would
    drop an alpha channel or invent colour. `mode` ("RGB" or "L", from `imagefolder-rgb:`/`imagefolder-gray:`)
    is the user's explicit permission to convert every image to that mode.
    """
    from PIL import Image, UnidentifiedImageError

    kinds, sizes = {}, []
    for rel in files:
        try:
            with Image.open(root / rel) as im:
                _check_header(root / rel, im)  # before decoding: a 40,000-pixel side is refused, not loaded
                im.load()
                kinds.setdefault(_mode_kind(im), (rel, im.mode))
                sizes.append(im.size)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
                ImportError) as exc:  # ImportError: an image plugin (e.g. HEIF) whose codec is missing
            raise UserError(f"cannot read image {root / rel} ({type(exc).__name__}: {exc}); "
                            "replace or remove the file") from None
    if mode is None and (len(kinds) > 1 or "alpha" in kinds):
        if "alpha" in kinds:
            rel, im_mode = kinds["alpha"]
            problem = f"image {root / rel} has an alpha channel ({im_mode}) that training would drop"
        else:
            rel, im_mode = kinds["gray"]
            problem = f"image {root / rel} is grayscale ({im_mode}) among colour images"
        raise UserError(f"{problem}; convert the files to one mode, or pass --data imagefolder-rgb:{root} "
                        "(or imagefolder-gray:PATH) to convert every image on load")
    channels = (1 if mode == "L" else 3) if mode else (1 if set(kinds) == {"gray"} else 3)
    w = int(np.median([s[0] for s in sizes]))
    h = int(np.median([s[1] for s in sizes]))
    return channels, (h, w)


#: Largest image side edgespec decodes (a 30000 x 30000 PNG is 2.7 GB decoded; training inputs are far smaller).
MAX_IMAGE_SIDE = 8192
#: Modes of more than 8 bits a channel: training reads 8-bit images, and converting these to 8 bits clips them
#: (a 16-bit grayscale PNG once read as all 255, mean 0.9997).
DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _check_image_path(p: Path) -> None:
    """Regular files with UTF-8 names only: a FIFO named x.png blocked training forever, and a name that is not
    UTF-8 cannot be written into the run's split and reports."""
    try:
        str(p).encode("utf-8")
    except UnicodeEncodeError:
        shown = str(p).encode("utf-8", "backslashreplace").decode("utf-8")
        raise UserError(f"file name {shown} is not UTF-8; rename it (e.g. `convmv -f latin1 -t utf8`)") from None
    if not p.is_file():
        raise UserError(f"{p} is not a regular file (a FIFO, device or folder named like an image); remove it or "
                        "give the folder regular image files only")


def _check_header(path: Path, im) -> None:
    if max(im.size) > MAX_IMAGE_SIDE:
        raise UserError(f"image {path} is {im.size[0]}x{im.size[1]} pixels, larger than edgespec reads "
                        f"({MAX_IMAGE_SIDE} a side); downscale it or remove it")
    if im.mode in DEEP_MODES:
        raise UserError(f"image {path} has more than 8 bits per channel (mode {im.mode}), which 8-bit training would "
                        "clip; convert it to 8 bits (scale 16-bit values by 1/257) or remove it")


def _mode_kind(im) -> str:
    """gray, colour or alpha: images of different kinds cannot share one tensor layout without a conversion."""
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        return "alpha"
    return "gray" if im.mode in ("L", "1", "I", "I;16", "I;16B", "I;16L", "F") else "colour"


def load_torchvision(name: str, root: str | None, download: bool) -> Source:
    import torchvision.datasets as tvd

    available = {n.lower(): n for n in dir(tvd) if n[0].isupper() and hasattr(getattr(tvd, n), "__getitem__")}
    supported = ["CIFAR10", "CIFAR100", "MNIST", "FashionMNIST", "KMNIST", "SVHN", "STL10"]
    key = name.lower()
    if key not in available or available[key] not in supported:
        raise unknown_name("torchvision dataset", name, supported)
    cls_name = available[key]
    ds_root = Path(root or "~/.cache/edgespec/datasets").expanduser()
    parts = []
    for train in (True, False):
        kwargs = {"split": "train" if train else "test"} if cls_name in ("SVHN", "STL10") else {"train": train}
        try:
            ds = getattr(tvd, cls_name)(root=str(ds_root), download=download, **kwargs)
        except RuntimeError as exc:
            if download:
                raise UserError(f"could not download {cls_name} into {ds_root}: {exc}") from None
            raise UserError(f"{cls_name} not found under {ds_root}; pass --download to fetch it, or give its "
                            f"folder as torchvision:{cls_name}:ROOT") from None
        parts.append(ds)
    images, labels = [], []
    for ds in parts:
        data = ds.data if not hasattr(ds.data, "numpy") else ds.data.numpy()
        if data.ndim == 3:
            data = data[..., None]
        if data.shape[1] in (1, 3) and data.shape[-1] not in (1, 3):  # SVHN/STL10 are N,C,H,W
            data = data.transpose(0, 2, 3, 1)
        targets = getattr(ds, "targets", None)
        if targets is None:
            targets = ds.labels
        images.append(np.ascontiguousarray(data, dtype=np.uint8))
        labels.append(np.asarray(targets, dtype=np.int64))
    classes = [str(c) for c in getattr(parts[0], "classes", range(int(labels[0].max()) + 1))]
    n_train = len(labels[0])
    all_images = np.concatenate(images)
    return Source(
        kind="torchvision",
        spec=f"torchvision:{cls_name}" + (f":{root}" if root else ""),
        classes=classes,
        labels=np.concatenate(labels),
        channels=all_images.shape[-1],
        size=tuple(all_images.shape[1:3]),
        images=all_images,
        predefined={"train": np.arange(n_train), "test": np.arange(n_train, len(all_images))},
        augment="handwriting" if all_images.shape[-1] == 1 else "natural",
    )


DATA_KINDS = ["digits", "synthetic", "imagefolder:PATH", "imagefolder-rgb:PATH", "imagefolder-gray:PATH",
              "torchvision:NAME[:ROOT]"]


def load_source(spec: str, download: bool = False) -> Source:
    kind, _, rest = spec.partition(":")
    if kind == "digits" and not rest:
        source = load_digits()
    elif kind == "synthetic":
        source = load_synthetic(_parse_options(rest))
    elif kind in ("imagefolder", "imagefolder-rgb", "imagefolder-gray"):
        if not rest:
            raise UserError(f"{kind} needs a path: --data {kind}:PATH")
        source = load_imagefolder(rest, {"imagefolder-rgb": "RGB", "imagefolder-gray": "L"}.get(kind))
    elif kind == "torchvision":
        name, _, root = rest.partition(":")
        if not name:
            raise UserError("torchvision needs a dataset name: --data torchvision:CIFAR10[:ROOT]")
        source = load_torchvision(name, root or None, download)
    else:
        raise unknown_name("dataset", spec, ["digits", "synthetic", "imagefolder", "imagefolder-rgb",
                                             "imagefolder-gray", "torchvision"])
    _check_labels(source)
    return source


def _check_labels(source: Source) -> None:
    if len(source) == 0:
        raise UserError(f"dataset {source.spec} holds no images; point --data at a folder with images")
    present = np.unique(source.labels)
    if len(present) < 2:
        raise UserError(f"dataset {source.spec} has {len(present)} class; a classifier needs at least two")


def _parse_options(text: str) -> dict[str, str]:
    options = {}
    for item in filter(None, text.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise UserError(f"bad option {item!r} in --data; write synthetic:key=value,key=value")
        options[key.strip()] = value.strip()
    allowed = {"groups", "classes", "per_class", "size", "noise", "seed"}
    for key in options:
        if key not in allowed:
            raise unknown_name("synthetic option", key, allowed)
    return options


def _int_opt(options: dict[str, str], key: str, default: int, lo: int, hi: int) -> int:
    return _num_opt(options, key, default, lo, hi, int, "a whole number")


def _float_opt(options: dict[str, str], key: str, default: float, lo: float, hi: float) -> float:
    return _num_opt(options, key, default, lo, hi, float, "a number")


def _num_opt(options: dict[str, str], key: str, default, lo, hi, cast, what: str):
    raw = options.get(key, default)
    try:
        value = cast(raw)
    except ValueError:
        raise UserError(f"synthetic option {key}={raw!r} is not {what}; give one in {lo}..{hi}") from None
    if not lo <= value <= hi:  # also false for nan
        raise UserError(f"synthetic option {key}={value} is out of range; use {lo}..{hi}")
    return value
