"""Partitioning a run's classes into groups: by the generalist's confusion, by its last layer, or at random.

confusion: "soft confusion" on the validation split, P[i, j] = mean softmax(logits / T)[j] over images of
  class i; affinity (P + P^T) / 2 off the diagonal; spectral clustering (scikit-learn). The temperature keeps
  the structure visible when the generalist is rarely wrong (hard confusion counts would be all zeros).
weights: cosine similarity of the rows of the last Linear layer; average-linkage agglomerative clustering.
random: the control; equal sizes.
With a group size instead of a count, groups get equal sizes (the remainder spread one per group): the
clustering's centres are kept and classes are assigned to size-limited slots by a linear assignment.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

import numpy as np

from ..errors import UserError
from ..runs import Run

log = logging.getLogger(__name__)

Method = Literal["confusion", "weights", "random"]
METHODS = ("confusion", "weights", "random")


def group_sizes(n_classes: int, n_groups: int | None, group_size: int | None) -> tuple[int, list[int] | None]:
    """(number of groups, exact sizes or None when the clustering decides)."""
    if (n_groups is None) == (group_size is None):
        raise UserError("give either --groups K or --group-size N (not both, not neither)")
    if group_size is not None:
        if not 2 <= group_size <= n_classes // 2:
            raise UserError(f"--group-size {group_size} does not fit {n_classes} classes; use 2..{n_classes // 2} "
                            "(at least two classes per group, at least two groups)")
        k = n_classes // group_size
        return k, [n_classes // k + (1 if i < n_classes % k else 0) for i in range(k)]
    if not 2 <= n_groups <= n_classes // 2:
        raise UserError(f"--groups {n_groups} does not fit {n_classes} classes; use 2..{n_classes // 2} "
                        "(every group needs at least two classes)")
    return n_groups, None


def soft_confusion(run: Run, split: str = "val", temperature: float = 2.0, device: str = "cpu") -> np.ndarray:
    import torch

    from ..evaluate import eval_loader, predict

    logits, labels = predict(run.model(), eval_loader(run.data(), split), torch.device(device))
    n = len(run.classes)
    missing = sorted(set(range(n)) - set(labels.tolist()))
    if missing:
        raise UserError(f"the {split} split has no images of {', '.join(run.classes[i] for i in missing[:5])}; "
                        "use --method weights or random")
    probs = torch.softmax(torch.from_numpy(logits) / temperature, 1).numpy().astype(np.float64)
    return np.stack([probs[labels == i].mean(0) for i in range(n)])


def confusion_affinity(conf: np.ndarray) -> np.ndarray:
    a = (conf + conf.T) / 2
    np.fill_diagonal(a, 0.0)
    a = a / max(a.max(), 1e-12)
    return a + 1e-6  # keeps the graph connected for the spectral embedding


def partition(run: Run, method: Method, n_groups: int | None = None, group_size: int | None = None,
              seed: int = 0, temperature: float = 2.0, device: str = "cpu") -> dict[str, list[str]]:
    """Named groups of class names covering every class of `run` exactly once."""
    if method not in METHODS:
        from ..errors import unknown_name

        raise unknown_name("partition method", method, METHODS)
    classes = run.classes
    k, sizes = group_sizes(len(classes), n_groups, group_size)
    if method == "random":
        labels = random_labels(len(classes), k, sizes, seed)
    elif method == "confusion":
        labels = cluster_affinity(confusion_affinity(soft_confusion(run, temperature=temperature, device=device)),
                                  k, sizes, seed)
    else:
        from ..models import get_head

        w = get_head(run.model()).weight.detach().double().numpy()
        labels = cluster_vectors(w / np.linalg.norm(w, axis=1, keepdims=True).clip(1e-12), k, sizes, seed)
    return name_groups(labels, classes)


def random_labels(n: int, k: int, sizes: list[int] | None, seed: int) -> np.ndarray:
    sizes = sizes or [n // k + (1 if i < n % k else 0) for i in range(k)]
    perm = np.random.default_rng(seed).permutation(n)
    labels = np.empty(n, dtype=np.int64)
    start = 0
    for g, size in enumerate(sizes):
        labels[perm[start:start + size]] = g
        start += size
    return labels


def cluster_affinity(affinity: np.ndarray, k: int, sizes: list[int] | None, seed: int) -> np.ndarray:
    from sklearn.cluster import SpectralClustering
    from sklearn.manifold import spectral_embedding

    if sizes is not None:
        emb = spectral_embedding(affinity, n_components=k, random_state=seed, drop_first=False)
        return balanced_assign(emb, k, sizes, seed)
    sc = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed, assign_labels="cluster_qr")
    return merge_singletons(sc.fit_predict(affinity), affinity)


def cluster_vectors(x: np.ndarray, k: int, sizes: list[int] | None, seed: int) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    if sizes is not None:
        return balanced_assign(x, k, sizes, seed)
    labels = AgglomerativeClustering(n_clusters=k, metric="cosine", linkage="average").fit_predict(x)
    return merge_singletons(labels, np.clip(x @ x.T, 0, None))


def balanced_assign(x: np.ndarray, k: int, sizes: list[int], seed: int) -> np.ndarray:
    """k-means centres, then each class to one of `sizes[g]` slots of centre g at least total distance."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans

    centres = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x).cluster_centers_
    slot_group = np.repeat(np.arange(k), sizes)
    cost = ((x[:, None, :] - centres[None, slot_group, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    labels = np.empty(len(x), dtype=np.int64)
    labels[rows] = slot_group[cols]
    return labels


def merge_singletons(labels: np.ndarray, affinity: np.ndarray) -> np.ndarray:
    """A one-class group cannot make a specialist: join it to the group it is most alike."""
    labels = labels.copy()
    while True:
        ids, counts = np.unique(labels, return_counts=True)
        single = ids[counts == 1]
        if len(single) == 0 or len(ids) <= 1:
            return labels
        i = int(np.flatnonzero(labels == single[0])[0])
        others = [g for g in ids if g != single[0]]
        best = max(others, key=lambda g: affinity[i, labels == g].mean())
        log.warning("class %d formed a group of its own; joined to its closest group (one group fewer)", i)
        labels[i] = best


def name_groups(labels: np.ndarray, classes: list[str]) -> dict[str, list[str]]:
    """Groups ordered by their first class; named by the members' common prefix when there is one."""
    order = sorted(set(labels.tolist()), key=lambda g: int(np.flatnonzero(labels == g)[0]))
    groups: dict[str, list[str]] = {}
    for i, g in enumerate(order):
        members = [classes[j] for j in np.flatnonzero(labels == g)]
        prefix = os.path.commonprefix(members).rstrip("-_ .")
        name = prefix if len(prefix) >= 2 and prefix not in groups and _safe(prefix) else f"group-{i + 1}"
        groups[name] = members
    return groups


def _safe(name: str) -> bool:
    from .groups import NAME_RE

    return bool(NAME_RE.fullmatch(name))
