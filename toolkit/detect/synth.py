"""A deterministic YOLO-format detection dataset whose classes come in semantic groups.

Three groups of three classes: shapes (circle, square, triangle), vehicles (car, truck, bus: a body on two
wheels, differing in outline) and signs (plus, cross, star). Classes inside a group look alike, groups differ,
so a specialist for one group has something to gain. Images are small (64 px by default) so that a detector
trains on a CPU in minutes. The same arguments always give the same bytes.
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..io import write_bytes, write_text

log = logging.getLogger(__name__)

GROUPS: dict[str, list[str]] = {
    "shapes": ["circle", "square", "triangle"],
    "vehicles": ["car", "truck", "bus"],
    "signs": ["plus", "cross", "star"],
}
CLASSES: list[str] = [c for names in GROUPS.values() for c in names]
#: width / height of each class's box (vehicles are wide)
ASPECT = {"car": 1.8, "truck": 2.1, "bus": 2.6}


def _wheels(d, x0: float, y0: float, x1: float, y1: float, r: float) -> None:
    for cx in (x0 + (x1 - x0) * 0.22, x0 + (x1 - x0) * 0.78):
        d.ellipse([cx - r, y1 - 2 * r, cx + r, y1], fill=(30, 30, 30))


def _draw_car(d, b, col) -> None:
    x0, y0, x1, y1 = b
    h, w = y1 - y0, x1 - x0
    r = h * 0.22
    d.polygon([(x0 + w * 0.25, y0 + h * 0.45), (x0 + w * 0.35, y0), (x0 + w * 0.68, y0), (x0 + w * 0.8, y0 + h * 0.45)],
              fill=col)
    d.rectangle([x0, y0 + h * 0.4, x1, y1 - r], fill=col)
    _wheels(d, x0, y0, x1, y1, r)


def _draw_truck(d, b, col) -> None:
    x0, y0, x1, y1 = b
    h, w = y1 - y0, x1 - x0
    r = h * 0.18
    d.rectangle([x0, y0, x0 + w * 0.68, y1 - r], fill=col)
    d.rectangle([x0 + w * 0.72, y0 + h * 0.35, x1, y1 - r], fill=tuple(int(c * 0.7) for c in col))
    _wheels(d, x0, y0, x1, y1, r)


def _draw_bus(d, b, col) -> None:
    x0, y0, x1, y1 = b
    h, w = y1 - y0, x1 - x0
    r = h * 0.18
    d.rectangle([x0, y0, x1, y1 - r], fill=col)
    n = 4
    for i in range(n):
        wx = x0 + w * (0.06 + i * 0.23)
        d.rectangle([wx, y0 + h * 0.15, wx + w * 0.15, y0 + h * 0.45], fill=(235, 245, 255))
    _wheels(d, x0, y0, x1, y1, r)


def _star(cx: float, cy: float, r: float, points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    out = []
    for k in range(2 * points):
        a = -math.pi / 2 + k * math.pi / points
        rr = r if k % 2 == 0 else r * inner
        out.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return out


def _draw(d, name: str, b: tuple[float, float, float, float], col: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    t = max(2.0, w * 0.28)
    if name == "circle":
        d.ellipse(b, fill=col)
    elif name == "square":
        d.rectangle(b, fill=col)
    elif name == "triangle":
        d.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=col)
    elif name == "plus":
        d.rectangle([cx - t / 2, y0, cx + t / 2, y1], fill=col)
        d.rectangle([x0, cy - t / 2, x1, cy + t / 2], fill=col)
    elif name == "cross":
        d.line([(x0, y0), (x1, y1)], fill=col, width=int(t * 0.8))
        d.line([(x0, y1), (x1, y0)], fill=col, width=int(t * 0.8))
    elif name == "star":
        d.polygon(_star(cx, cy, min(w, h) / 2), fill=col)
    else:
        DRAW_VEHICLE[name](d, b, col)


DRAW_VEHICLE: dict[str, Callable] = {"car": _draw_car, "truck": _draw_truck, "bus": _draw_bus}


def _overlaps(b, boxes, margin: float = 2.0) -> bool:
    return any(b[0] < o[2] + margin and o[0] < b[2] + margin and b[1] < o[3] + margin and o[1] < b[3] + margin
               for o in boxes)


def render(rng: np.random.Generator, size: int, max_objects: int) -> tuple[bytes, list[tuple[int, float, ...]]]:
    """One PNG image and its YOLO labels (class, cx, cy, w, h normalised)."""
    from PIL import Image, ImageDraw

    bg = rng.integers(170, 236, size=3)
    pixels = np.clip(bg + rng.normal(0, 10, size=(size, size, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    d = ImageDraw.Draw(img)
    boxes: list[tuple[float, float, float, float]] = []
    labels = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(len(CLASSES)))
        name = CLASSES[cls]
        for _attempt in range(20):
            h = float(rng.uniform(0.2, 0.4) * size)
            w = h * ASPECT.get(name, 1.0)
            if w > size * 0.9:
                w, h = size * 0.9, size * 0.9 / ASPECT.get(name, 1.0)
            x0 = float(rng.uniform(1, size - w - 1))
            y0 = float(rng.uniform(1, size - h - 1))
            b = (round(x0), round(y0), round(x0 + w), round(y0 + h))
            if not _overlaps(b, boxes):
                break
        else:
            continue
        col = tuple(int(c) for c in rng.integers(0, 150, size=3))
        _draw(d, name, b, col)
        boxes.append(b)
        labels.append((cls, (b[0] + b[2]) / 2 / size, (b[1] + b[3]) / 2 / size, (b[2] - b[0]) / size,
                       (b[3] - b[1]) / size))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue(), labels


def synth_detect(out: str | Path, train: int = 300, val: int = 100, size: int = 64, max_objects: int = 3,
                 seed: int = 0, overwrite: bool = False) -> Path:
    """Write `out/images/{train,val}`, `out/labels/{train,val}` and `out/data.yaml`; return the data.yaml path."""
    out = Path(out).resolve()
    if size < 32 or size % 32:
        raise UserError(f"--size {size} is not a multiple of 32 (YOLO strides); use 64, 96 or 128")
    if train < 10 or val < 5:
        raise UserError(f"too few images (train {train}, val {val}); use at least 10 training and 5 validation images")
    if max_objects < 1:
        raise UserError("--max-objects must be at least 1")
    if out.exists() and _unfinished(out):  # an interrupted synth-detect: its own files go, the rerun writes all
        _remove_own(out)
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out} is not empty; choose an empty --out or pass --overwrite")
        _remove_own(out)
    write_text(out / UNFINISHED, "edgespec data synth-detect is writing this folder\n")  # what marks it as ours
    for split_id, (split, count) in enumerate((("train", train), ("val", val))):
        for i in range(count):
            rng = np.random.default_rng([seed, split_id, i])
            png, labels = render(rng, size, max_objects)
            write_bytes(out / "images" / split / f"{i:05d}.png", png)
            text = "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels)
            write_text(out / "labels" / split / f"{i:05d}.txt", text)
    data = data_yaml(out, "images/train", "images/val", CLASSES, GROUPS,
                     synth={"train": train, "val": val, "size": size, "max_objects": max_objects, "seed": seed})
    (out / UNFINISHED).unlink()
    log.info("wrote %d training and %d validation images to %s", train, val, out)
    return data


_OWN_FILE = re.compile(r"(images/(train|val)/\d{5}\.png|labels/(train|val)/\d{5}\.txt)")


UNFINISHED = ".edgespec-synth-detect"


def _remove_own(out: Path) -> None:
    """What a synth-detect wrote in `out` (its images, labels, label caches, data.yaml, marker), and the folders
    that leaves empty; a file of the user's beside them stays (--overwrite replaces the dataset, nothing else)."""
    from ..io import is_own_temporary

    for p in sorted(out.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        rel = p.relative_to(out).as_posix()
        if p.is_file() and (_OWN_FILE.fullmatch(rel) or is_own_temporary(p) or rel in ("data.yaml", UNFINISHED)
                            or (p.suffix == ".cache" and rel.startswith("labels/"))):
            p.unlink()
        elif p.is_dir() and not p.is_symlink() and rel.split("/")[0] in ("images", "labels") and not any(p.iterdir()):
            p.rmdir()


def _unfinished(out: Path) -> bool:
    """`out` holds only what an interrupted synth-detect wrote (its marker, images and labels, no data.yaml yet):
    the rerun the interrupt message asks for writes the same files again (they are seeded) and finishes. Without
    the marker, image files of the same names are a user's dataset and are never touched."""
    from ..io import is_own_temporary

    if not (out / UNFINISHED).is_file():
        return False
    for p in out.rglob("*"):
        if p.name == UNFINISHED and p.parent == out:
            continue
        rel = p.relative_to(out).as_posix()
        if p.is_dir() and rel in ("images", "labels", "images/train", "images/val", "labels/train", "labels/val"):
            continue
        if p.is_file() and not p.is_symlink() and (_OWN_FILE.fullmatch(rel) or is_own_temporary(p)
                                                   or p.name == ".lock"):
            continue
        return False
    return True


def data_yaml(root: Path, train: str, val: str, names: list[str], groups: dict[str, list[str]],
              **extra: Any) -> Path:
    """An Ultralytics data file; `groups` (name -> class names) is edgespec's addition, ignored by Ultralytics."""
    import yaml

    doc = {"path": str(root), "train": train, "val": val, "nc": len(names),
           "names": dict(enumerate(names)), "groups": groups, **extra}
    path = root / "data.yaml"
    write_text(path, yaml.safe_dump(doc, sort_keys=False))
    return path


SYNTH_SPEC = "synth-detect"


def resolve_synth(data: str, root: Path) -> Path:
    """A data spec as a data.yaml path: `synth-detect[:train=N,val=N,size=N,max_objects=N,seed=N]` is written into
    `root` (reused when it is already there with the same settings); anything else is a path, returned as is."""
    if not (data == SYNTH_SPEC or data.startswith(SYNTH_SPEC + ":")):
        return Path(data)
    import inspect

    from ..io import read_yaml

    allowed = [p for p in inspect.signature(synth_detect).parameters if p not in ("out", "overwrite")]
    kwargs: dict[str, int] = {}
    for item in filter(None, data.partition(":")[2].split(",")):
        key, _, value = item.partition("=")
        if key not in allowed or not value.strip().lstrip("-").isdigit():
            raise UserError(f"bad {SYNTH_SPEC} option {item!r}; use {', '.join(k + '=N' for k in allowed)}")
        kwargs[key] = int(value)
    settings = {k: kwargs.get(k, p.default) for k, p in inspect.signature(synth_detect).parameters.items()
                if k in allowed}
    existing = root / "data.yaml"
    if existing.is_file():
        doc = read_yaml(existing, "data file", "remove it to regenerate")
        if isinstance(doc, dict) and doc.get("synth") == settings:
            return existing
    return synth_detect(root, overwrite=True, **settings)
