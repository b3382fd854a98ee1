"""A deployment site to specialize for: some of a run's classes, rendered with a shift, as unlabelled images.

`write_target` draws images the generalist never trained on (synthetic: the same generator with another seed;
any other source: the run's test split), keeps only the target's classes, applies a shift (brightness, noise,
contrast, thicker strokes) and writes two folders: `unlabeled/` (PNG files, no labels: what
`edgespec specialize --target-images` reads) and `test/<class>/` (the same kind of images, labelled, an
imagefolder for measurement only). `target.json` records the classes, the shift and the counts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError, unknown_name

log = logging.getLogger(__name__)

SHIFTS = ("none", "brightness", "dark", "noise", "contrast", "thick")


def apply_shift(images: np.ndarray, shift: str, rng: np.random.Generator) -> np.ndarray:
    """`images` (N, H, W, C) uint8 as the deployment camera would see them."""
    x = images.astype(np.float32)
    if shift == "brightness":
        x = x * 1.35 + 30
    elif shift == "dark":
        x = x * 0.6
    elif shift == "noise":
        x = x + rng.normal(0, 40, x.shape)
    elif shift == "contrast":
        x = (x - x.mean(axis=(1, 2, 3), keepdims=True)) * 0.5 + 128
    elif shift == "thick":  # a 2x2 grey dilation: thicker strokes, as a broader pen or blur would give
        from scipy.ndimage import grey_dilation

        x = grey_dilation(x, size=(1, 2, 2, 1))
    elif shift != "none":
        raise unknown_name("shift", shift, SHIFTS)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _fresh_images(run_info: dict[str, Any], run_path: Path, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images of the run's source that its training never saw, with their source labels."""
    from . import load_source
    from .sources import _parse_options, load_synthetic

    spec = run_info["data"]
    if spec.startswith("synthetic"):
        options = _parse_options(spec.partition(":")[2])
        options["seed"] = str(int(options.get("seed", 0)) + 1000 + seed)  # same classes, new draws
        source = load_synthetic(options)
        return source.images, source.labels, source.classes
    from ..io import read_json

    source = load_source(spec)
    if source.images is None:
        raise UserError(f"synth-target works on in-memory sources (digits, synthetic, torchvision), not {spec}")
    from .split import check_split

    split = read_json(run_path / "split.json", "split file")
    check_split(split, source)  # parts disjoint, indices in range: an edited split.json is refused, not indexed
    test = np.asarray(split["test"], dtype=np.int64)
    return source.images[test], source.labels[test], source.classes


def write_target(run_path: str | Path, out: str | Path, classes: list[str], shift: str = "none", *,
                 per_class: int | None = None, test_fraction: float = 0.5, seed: int = 0) -> dict[str, Any]:
    """Write OUT/unlabeled/*.png, OUT/test/<class>/*.png and OUT/target.json for the target `classes`."""
    from PIL import Image

    from ..io import atomic_path, read_json, write_json

    if shift not in SHIFTS:
        raise unknown_name("shift", shift, SHIFTS)
    run_path = Path(run_path)
    info = read_json(run_path / "run.json", "run file")
    images, labels, names = _fresh_images(info, run_path, seed)
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise unknown_name("class", unknown[0], names)
    if len(classes) < 1:
        raise UserError("name at least one target class")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; choose a new --out for the target images")
    rng = np.random.default_rng(seed)
    counts: dict[str, dict[str, int]] = {}
    unl_i = 0
    for name in classes:
        idx = np.flatnonzero(labels == names.index(name))
        rng.shuffle(idx)
        if per_class is not None:
            idx = idx[:per_class]
        if len(idx) < 2:
            raise UserError(f"class {name!r} has {len(idx)} fresh images; a target class needs at least two")
        shifted = apply_shift(images[idx], shift, rng)
        n_test = max(1, int(round(len(idx) * test_fraction)))
        for k, img in enumerate(shifted):
            pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
            if k < n_test:
                path = out / "test" / name / f"{k:05d}.png"
            else:
                path = out / "unlabeled" / f"{unl_i:06d}.png"
                unl_i += 1
            with atomic_path(path) as tmp:
                pil.save(tmp, format="PNG")
        counts[name] = {"test": n_test, "unlabeled": len(idx) - n_test}
    # unlabeled files are numbered in class order; shuffle the names so nothing in them tells a class
    order = rng.permutation(unl_i)
    files = sorted((out / "unlabeled").glob("*.png"))
    for f in files:
        f.rename(f.with_name(f"u{f.name}"))
    for new, f in zip(order, sorted((out / "unlabeled").glob("u*.png")), strict=True):
        f.rename(f.with_name(f"{int(new):06d}.png"))
    meta = {"run": str(run_path.resolve()), "data": info["data"], "classes": classes, "shift": shift, "seed": seed,
            "counts": counts}
    write_json(out / "target.json", meta)
    log.info("wrote %d unlabeled and %d test images of %d classes (shift %s) to %s", unl_i,
             sum(c["test"] for c in counts.values()), len(classes), shift, out)
    return meta
