"""The train/val/test split: fixed by seed, saved in the run, reused by every later step."""

from __future__ import annotations

import hashlib

import numpy as np

from ..errors import UserError
from .sources import Source

SPLIT_FORMAT = "edgespec.split/1"


def fingerprint(source: Source) -> str:
    """Hash of what the split indexes into, so a split is never applied to different data."""
    h = hashlib.sha256()
    h.update(source.labels.astype(np.int64).tobytes())
    h.update("\0".join(source.classes).encode())
    if source.files is not None:
        h.update("\0".join(source.files).encode())
    elif source.images is not None:
        h.update(hashlib.sha256(np.ascontiguousarray(source.images).tobytes()).digest())
    return h.hexdigest()


def make_split(source: Source, seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15) -> dict:
    """Stratified by class; where the source fixes a split (train/test folders) that is kept."""
    from sklearn.model_selection import train_test_split

    pre = source.predefined or {}
    idx_all = np.arange(len(source))
    if "train" in pre:
        pool = pre["train"]
        test = pre.get("test")
        val = pre.get("val")
    else:
        pool, test, val = idx_all, None, None
    if test is None:
        pool, test = _stratified(train_test_split, pool, source.labels, test_fraction, seed)
    if val is None:
        frac = val_fraction / max(1e-9, 1 - (test_fraction if "test" not in pre else 0))
        pool, val = _stratified(train_test_split, pool, source.labels, frac, seed + 1)
    return {
        "format": SPLIT_FORMAT,
        "data": source.spec,
        "seed": seed,
        "fingerprint": fingerprint(source),
        "n": len(source),
        "train": sorted(int(i) for i in pool),
        "val": sorted(int(i) for i in val),
        "test": sorted(int(i) for i in test),
    }


def _stratified(tts, idx: np.ndarray, labels: np.ndarray, fraction: float, seed: int):
    y = labels[idx]
    counts = np.bincount(y)
    strat = y if counts[counts > 0].min() >= 2 else None
    try:
        return tts(idx, test_size=fraction, random_state=seed, stratify=strat)
    except ValueError as exc:
        raise UserError(f"cannot split {len(idx)} images into train/val/test ({exc}); add more images per class")\
            from None


def check_split(split: dict, source: Source) -> None:
    if not isinstance(split, dict) or split.get("format") != SPLIT_FORMAT or not all(
            isinstance(split.get(k), list) for k in ("train", "val", "test")) or "fingerprint" not in split:
        raise UserError("split.json is not an edgespec split; re-run `edgespec train` to recreate the run")
    if split["fingerprint"] != fingerprint(source):
        raise UserError(f"the data behind {source.spec} changed since the run was made (fingerprint mismatch); "
                        "restore the original data or train a new run")
    n = len(source)
    for part in ("train", "val", "test"):
        bad = [i for i in split[part] if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n]
        if bad:
            raise UserError(f"split.json lists {bad[0]!r} among its {part} images, not an index of the {n} images of "
                            f"{source.spec}; it was edited: restore it or train a new run")
        if len(set(split[part])) != len(split[part]):
            raise UserError(f"split.json lists an image twice in {part}; it was edited: restore it or train a new run")
    for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
        both = set(split[a]) & set(split[b])
        if both:
            raise UserError(f"split.json puts {len(both)} images (e.g. index {min(both)}) in both {a} and {b}, so "
                            f"{b} figures would be measured on {a} images; restore it or train a new run")
