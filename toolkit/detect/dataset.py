"""YOLO-format data files: read and check them, and derive a group's dataset without copying images.

Ultralytics finds an image's labels by replacing the last `/images/` of its path with `/labels/`. A derived
dataset therefore holds, per split, `images/<split>/` with one symlink per kept image (pointing at the original
file, never a copy), `labels/<split>/` with the filtered, remapped label files, and `<split>.txt` listing the
symlinked images. The data file names the group's classes in output order.

A generalist trains from a `run_view` of its dataset (images and label files linked, nothing filtered) in the
same layout, so that the label caches Ultralytics writes next to the labels land in the run, never in the
user's dataset.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import read_yaml, write_text

log = logging.getLogger(__name__)

IMG_SUFFIXES = {"bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm", "heic"}
SPLITS = ("train", "val")


@dataclass
class DetData:
    """A checked data file: absolute split paths, class names in id order, semantic groups if it has any."""

    path: Path  # the data.yaml
    root: Path
    splits: dict[str, list[Path]]  # split -> directories / list files / image files
    names: list[str]
    groups: dict[str, list[str]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def image_files(self, split: str) -> list[Path]:
        files: list[str] = []
        for p in self.splits[split]:
            if p.is_dir():
                files += [str(f) for f in p.rglob("*") if f.is_file()]
            elif p.suffix.lower() == ".txt":
                lines = p.read_text(encoding="utf-8-sig").strip().splitlines()
                files += [str(p.parent / x[2:]) if x.startswith("./") else x for x in lines if x.strip()]
            else:
                files.append(str(p))
        out = sorted(Path(f) for f in files if f.rpartition(".")[-1].lower() in IMG_SUFFIXES)
        if not out:
            raise UserError(f"no images found for split {split!r} of {self.path}; check its '{split}:' entry")
        return out


def label_path(image: Path) -> Path:
    """Where Ultralytics looks for an image's labels (last /images/ -> /labels/, suffix -> .txt)."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    text = str(image)
    if sa not in text:
        return image.with_suffix(".txt")
    return Path(sb.join(text.rsplit(sa, 1))).with_suffix(".txt")


def load_data(path: str | os.PathLike) -> DetData:
    """Read and check an Ultralytics detection data file; every problem is a one-line UserError."""
    path = Path(path).expanduser().resolve()
    raw = read_yaml(path, "data file", "pass a YOLO data.yaml (`edgespec data synth-detect` makes one)")
    if not isinstance(raw, dict):
        raise UserError(f"{path} must be a mapping with train, val and names; see `edgespec data synth-detect`")
    names = raw.get("names")
    if isinstance(names, dict):
        if set(names) != set(range(len(names))):  # not sorted(): keys of mixed types do not compare
            raise UserError(f"{path}: names must be numbered 0..{len(names) - 1} without gaps")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise UserError(f"{path}: 'names' must list the class names (a list or a mapping id -> name)")
    if len(set(names)) != len(names):
        raise UserError(f"{path}: duplicate class names in 'names'; give every class its own name")
    if "nc" in raw and raw["nc"] != len(names):
        raise UserError(f"{path}: nc is {raw['nc']} but {len(names)} names are given; make them agree")
    root = Path(raw.get("path") or path.parent)
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    splits = {}
    for split in SPLITS:
        entry = raw.get(split)
        if not entry:
            raise UserError(f"{path}: missing '{split}:'; add it (a folder, list file or list of them, relative to "
                            "'path')")
        entries = entry if isinstance(entry, list) else [entry]
        resolved = [p if (p := Path(str(e))).is_absolute() else (root / p).resolve() for e in entries]
        for p in resolved:
            if not p.exists():
                raise UserError(f"{path}: {split} path {p} does not exist; fix 'path:' or '{split}:'")
        splits[split] = resolved
    groups = check_groups(raw.get("groups") or {}, names, str(path))
    return DetData(path, root, splits, list(names), groups, raw)


#: A detection specialist may serve a single class (one class branch of the head).
MIN_GROUP_SIZE = 1


def check_groups(groups: Any, names: list[str], where: str) -> dict[str, list[str]]:
    """Named groups of class names, checked by the one groups schema (toolkit.specialize.groups)."""
    from ..specialize.groups import check_groups as check

    if groups is None or groups == {}:  # a data file may declare no groups (a derived group's data has none)
        return {}
    return check(groups, names, where, MIN_GROUP_SIZE)


def load_groups(path: str | os.PathLike, names: list[str]) -> dict[str, list[str]]:
    from ..specialize.groups import load_groups as load

    return load(path, names, MIN_GROUP_SIZE)


def remap_labels(text: str, mapping: dict[int, int]) -> str:
    """Keep label lines whose class is in `mapping`, with the class renumbered; other fields unchanged."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        try:
            cls = int(float(parts[0]))
        except ValueError:
            raise UserError(f"label line {line!r} does not start with a class id; fix the label file") from None
        if cls in mapping:
            out.append(" ".join([str(mapping[cls]), *parts[1:]]))
    return "".join(f"{line}\n" for line in out)


def _reset_split(out: Path, split: str) -> None:
    for sub in ("images", "labels"):
        shutil.rmtree(out / sub / split, ignore_errors=True)
    (out / "labels" / f"{split}.cache").unlink(missing_ok=True)
    (out / "images" / split).mkdir(parents=True, exist_ok=True)


def derive_dataset(source: DetData, keep: list[int], names: list[str], out: Path,
                   groups: dict[str, list[str]] | None = None, ids: list[int] | None = None,
                   splits: tuple[str, ...] = SPLITS, **extra: Any) -> tuple[Path, dict[str, int]]:
    """Write a derived dataset in `out` holding only the images with classes `keep` (source ids), renumbered to
    their positions in `keep` (or to `ids`, one per kept class). Images are symlinked, not copied. Returns the
    data file and the number of images per split."""
    from .synth import data_yaml

    out = Path(out).resolve()
    mapping = {src: (ids[i] if ids else i) for i, src in enumerate(keep)}
    counts: dict[str, int] = {}
    for split in splits:
        _reset_split(out, split)
        listed = []
        for i, image in enumerate(source.image_files(split)):
            lab = label_path(image)
            text = remap_labels(lab.read_text(encoding="utf-8"), mapping) if lab.is_file() else ""
            if not text:
                continue
            link = out / "images" / split / f"{i:06d}_{image.name}"
            link.symlink_to(image.resolve())
            write_text(label_path(link), text)
            listed.append(str(link))
        if not listed:
            raise UserError(f"no {split} image of {source.path} holds any of the classes {names}; "
                            "check the group and the labels")
        write_text(out / f"{split}.txt", "".join(f"{p}\n" for p in listed))
        counts[split] = len(listed)
    data = data_yaml(out, f"{splits[0]}.txt", f"{splits[-1]}.txt", names, groups or {}, source=str(source.path),
                     source_class_ids=list(keep), **extra)
    log.info("derived dataset %s: %s images (symlinks) with %d classes", out, counts, len(names))
    return data, counts


def run_view(source: DetData, out: Path) -> tuple[Path, dict[str, int]]:
    """The run's own view of a whole dataset: every image (background images too) and every label file, each a
    symlink to the original, under `out`. Ultralytics writes its label caches (labels/<split>.cache) next to the
    labels it reads, so training and validating from the view keep them inside the run, never in the user's dataset.
    Rebuilt on each call (cheap: links only), so an interrupted build or a resumed run starts from a whole view."""
    from .synth import data_yaml

    out = Path(out).resolve()
    counts: dict[str, int] = {}
    for split in SPLITS:
        _reset_split(out, split)
        listed = []
        for i, image in enumerate(source.image_files(split)):
            link = out / "images" / split / f"{i:06d}_{image.name}"
            link.symlink_to(image.resolve())
            lab = label_path(image)
            if lab.is_file():  # no label file: a background image, as in the source
                target = label_path(link)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(lab.resolve())
            listed.append(str(link))
        write_text(out / f"{split}.txt", "".join(f"{p}\n" for p in listed))
        counts[split] = len(listed)
    data = data_yaml(out, "train.txt", "val.txt", source.names, source.groups, source=str(source.path),
                     source_class_ids=list(range(len(source.names))))
    log.info("run view of %s in %s: %s images (symlinks)", source.path, out, counts)
    return data, counts
