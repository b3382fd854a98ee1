"""Specializing for a deployment site known only from unlabelled images (methods.md 2 and 3).

- `load_target_images`: the folder's images, checked against what the run's model takes, preprocessed as the
  generalist's evaluation images are, and a fingerprint of the folder.
- `propose_group`: the classes the generalist predicts on them with at least `min_share` of the predictions
  (with --bn-target adapt, the generalist with batch-norm statistics of the site: `site_model`).
- `training_clusters`: the generalist's penultimate features of its whole training split, k-means into K
  clusters (scikit-learn); cached in the generalist run, keyed by its checkpoint's hash.
- `ClusterSampler`: draw a cluster by the target's histogram, then an example uniformly in it (methods.md 3).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler

from ..errors import UserError
from ..runs import Run

log = logging.getLogger(__name__)
CACHE_DIR = "target-cache"


def image_files(folder: str | Path) -> list[Path]:
    from ..data.sources import IMAGE_SUFFIXES

    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def folder_fingerprint(folder: str | Path) -> str:
    """sha256 over the folder's image files (relative names and contents): what a run records of its target."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in image_files(folder):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def load_target_images(folder: str | Path, run: Run) -> tuple[torch.Tensor, str, int]:
    """(images as the model's eval input, sha256 fingerprint of the folder, count)."""
    from PIL import Image, UnidentifiedImageError

    from ..data.datasets import build_transform
    from ..data.sources import IMAGE_SUFFIXES, _mode_kind

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--target-images {folder} is not a directory; pass a folder of unlabelled images")
    files = image_files(folder)
    if not files:
        raise UserError(f"--target-images {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                        "add the site's images")
    pre = run.info["preprocess"]
    channels, (h, w) = pre["channels"], pre["input_size"]
    tf = build_transform("natural", False, (h, w), pre["mean"], pre["std"])
    xs = []
    for path in files:
        try:
            with Image.open(path) as im:
                im.load()
                kind = _mode_kind(im)
                arr = np.array(im.convert("L" if channels == 1 else "RGB"))
                size = im.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, ImportError) as exc:  # a codec plugin
            raise UserError(f"cannot read target image {path} ({type(exc).__name__}); replace or remove it") from None
        if kind == "alpha" or (kind == "gray") != (channels == 1):
            got = {"alpha": "an alpha channel", "gray": "1 channel", "colour": "3 channels"}[kind]
            raise UserError(f"target image {path} has {got}; the model takes {channels}-channel images: convert "
                            "the folder's images")
        if abs(size[0] / size[1] - w / h) > 0.01 * (w / h):
            raise UserError(f"target image {path} is {size[0]}x{size[1]}; the model takes {w}x{h} images (or the "
                            "same aspect ratio, resized): crop or resize the folder's images")
        xs.append(tf(arr[..., None] if arr.ndim == 2 else arr))
    return torch.stack(xs), folder_fingerprint(folder), len(files)


@torch.no_grad()
def penultimate(model: nn.Module, x: torch.Tensor, device: torch.device | str = "cpu", batch: int = 256
                ) -> tuple[np.ndarray, np.ndarray]:
    """(features the head reads, logits) of `x` in eval mode."""
    from ..models import get_head

    feats: list[torch.Tensor] = []
    handle = get_head(model).register_forward_pre_hook(lambda m, args: feats.append(args[0].detach().float().cpu()))
    model.eval()
    logits = []
    try:
        for i in range(0, len(x), batch):
            logits.append(model(x[i:i + batch].to(device)).float().cpu())
    finally:
        handle.remove()
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


def propose_group(logits: np.ndarray, classes: list[str], min_share: float) -> tuple[list[str], dict[str, float]]:
    """Classes predicted on at least `min_share` of the target images (by share, then name), and every share."""
    counts = np.bincount(logits.argmax(1), minlength=len(classes))
    shares = counts / max(1, counts.sum())
    order = sorted(range(len(classes)), key=lambda i: (-shares[i], classes[i]))
    chosen = [classes[i] for i in order if shares[i] >= min_share]
    if len(chosen) < 2:
        raise UserError(f"the generalist predicts {len(chosen)} class (share >= {min_share}) on the target images "
                        f"({', '.join(chosen)}); a specialist needs two: lower --min-share or pass --group/--groups")
    return chosen, {classes[i]: round(float(shares[i]), 6) for i in order if counts[i]}


def training_clusters(run: Run, k: int, seed: int, device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """k-means of the generalist's training split in its penultimate features: centers, train indices, assignment.

    Cached in RUN/target-cache/ (atomic write), keyed by the checkpoint's sha256, K and the seed.
    """
    from ..data import stack
    from ..io import atomic_path, sha256_file

    sha = sha256_file(run.checkpoint_path("best"))
    path = run.path / CACHE_DIR / f"kmeans-k{k}-seed{seed}-{sha[:16]}.npz"
    if path.is_file():
        with np.load(path) as z:
            log.info("training clusters from the cache %s", path)
            return {key: z[key] for key in z.files}
    from sklearn.cluster import KMeans

    bundle = run.data()
    ds = bundle.dataset("train")
    x, _ = stack(ds)
    feats, _ = penultimate(run.model("best").to(device), x, device)
    if len(feats) < k:
        raise UserError(f"--clusters {k} is more than the {len(feats)} training images; use fewer clusters")
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(feats.astype(np.float64))
    result = {"centers": km.cluster_centers_.astype(np.float32), "indices": ds.indices.astype(np.int64),
              "assign": km.labels_.astype(np.int64)}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **result)
    log.info("clustered %d training images into %d clusters (cached in %s)", len(feats), k, path)
    return result


def nearest(feats: np.ndarray, centers: np.ndarray) -> np.ndarray:
    d = ((feats[:, None, :].astype(np.float64) - centers[None, :, :]) ** 2).sum(-1)
    return d.argmin(1)


class ClusterSampler(Sampler[int]):
    """Indices into a dataset: a cluster drawn by `weights`, then one of its members uniformly (methods.md 3).

    `clusters[i]` is item i's cluster. Clusters with zero weight, or no member, are never drawn. `generator` is the
    one the training loop reseeds every epoch, so a resumed run draws the same stream.
    """

    def __init__(self, clusters: np.ndarray, weights: np.ndarray, num_samples: int, generator: torch.Generator):
        clusters = np.asarray(clusters, dtype=np.int64)
        w = np.asarray(weights, dtype=np.float64).copy()
        present = np.bincount(clusters, minlength=len(w))[:len(w)] > 0
        w[~present] = 0.0
        if w.sum() <= 0:
            raise UserError("no training image of the group falls in a cluster the target images occupy; use "
                            "--sampling uniform or fewer --clusters")
        self.weights = torch.as_tensor(w / w.sum())
        order = np.argsort(clusters, kind="stable")
        self.members = torch.as_tensor(order)
        counts = np.bincount(clusters, minlength=len(w))[:len(w)]
        self.counts = torch.as_tensor(counts)
        self.starts = torch.as_tensor(np.concatenate([[0], np.cumsum(counts)[:-1]]))
        self.num_samples = num_samples
        self.generator = generator

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """The loop reseeds `generator` per epoch already."""

    def __iter__(self):
        c = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=self.generator)
        r = torch.rand(self.num_samples, generator=self.generator, dtype=torch.float64)
        offset = (r * self.counts[c]).long().clamp(max=self.counts[c] - 1)
        yield from self.members[self.starts[c] + offset].tolist()


@dataclass
class TargetPlan:
    """What the target images decide for every specialist trained toward them."""

    images: torch.Tensor
    sampling: str
    bn_target: str
    record: dict[str, Any] = field(default_factory=dict)
    clusters: dict[str, np.ndarray] | None = None
    histogram: np.ndarray | None = None

    def sampler_factory(self, bundle):
        """FitHooks.train_sampler for `bundle`'s training split, or None for uniform sampling."""
        if self.sampling != "importance":
            return None
        by_index = dict(zip(self.clusters["indices"].tolist(), self.clusters["assign"].tolist(), strict=True))
        hist = self.histogram

        def make(dataset, generator: torch.Generator) -> ClusterSampler:
            assign = np.asarray([by_index[int(i)] for i in dataset.indices], dtype=np.int64)
            return ClusterSampler(assign, hist, len(dataset), generator)

        return make


def site_model(run: Run, images: torch.Tensor, bn_target: str | None, device: torch.device | str = "cpu"
               ) -> nn.Module:
    """The generalist as it would see the site: with --bn-target adapt, its batch-norm statistics re-estimated on
    the site's images (AdaBN), so a brightness or contrast shift does not skew the proposal and the histogram."""
    model = run.model("best").to(device)
    if bn_target != "adapt":
        return model
    from torch.utils.data import DataLoader

    from .bn import adapt_statistics, batchnorm_layers

    return adapt_statistics(model, DataLoader(images, batch_size=64), device) if batchnorm_layers(model) else model


def plan_target(run: Run, folder: str | Path, cfg: Any, device: torch.device | str = "cpu") -> TargetPlan:
    """Load the target images and, for importance sampling, the clusters and the target's histogram."""
    x, fingerprint, n = load_target_images(folder, run)
    record: dict[str, Any] = {"images": str(Path(folder).resolve()), "fingerprint": fingerprint, "count": n,
                              "sampling": cfg.sampling, "bn_target": cfg.bn_target}
    plan = TargetPlan(x, cfg.sampling, cfg.bn_target, record)
    if cfg.sampling == "importance":
        if n < cfg.clusters:
            raise UserError(f"{n} target images are fewer than --clusters {cfg.clusters}; add images or use fewer "
                            "clusters")
        plan.clusters = training_clusters(run, cfg.clusters, cfg.seed, device)
        feats, _ = penultimate(site_model(run, x, cfg.bn_target, device), x, device)
        plan.histogram = np.bincount(nearest(feats, plan.clusters["centers"]), minlength=cfg.clusters) / n
        record.update(clusters=cfg.clusters, histogram=[round(float(v), 6) for v in plan.histogram])
    return plan


def propose_for_target(run: Run, cfg: Any, out: str | Path, propose: bool) -> tuple[TargetPlan, Path | None]:
    """The target plan and, when `propose`, the proposed group written as OUT/groups.yaml (group `target`).

    With target images every group goes into OUT/<group>/, so the groups file can sit beside the runs.
    """
    from ..train.loop import resolve_device
    from .groups import write_groups

    device = resolve_device(cfg.device)
    plan = plan_target(run, cfg.target_images, cfg, device)
    if not propose:
        return plan, None
    _, logits = penultimate(site_model(run, plan.images, cfg.bn_target, device), plan.images, device)
    chosen, shares = propose_group(logits, run.classes, cfg.min_share)
    plan.record.update(proposed_group=chosen, prediction_shares=shares, min_share=cfg.min_share)
    path = write_groups(Path(out) / "groups.yaml", {"target": chosen},
                        f"edgespec groups proposed for {Path(cfg.target_images).resolve()}:\nthe classes the "
                        f"generalist {run.path.resolve()} predicts on >= {cfg.min_share} of the target images")
    return plan, path
