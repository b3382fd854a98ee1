"""`edgespec evaluate`: top-1, per-class accuracy and the confusion matrix on the run's saved test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .data import DataBundle
from .io import atomic_path, write_csv, write_json
from .runs import Run


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels for every item of `loader`, in order."""
    model.eval()
    logits, labels = [], []
    for x, y in loader:
        logits.append(model(x.to(device)).float().cpu())
        labels.append(y)
    if not logits:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int64)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def eval_loader(bundle: DataBundle, split: str, batch_size: int = 256, workers: int | None = 0) -> DataLoader:
    workers = workers or 0
    return DataLoader(bundle.dataset(split), batch_size=batch_size, shuffle=False, num_workers=workers,
                      persistent_workers=workers > 0)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def evaluate_run(run: Run, which: str = "best", split: str = "test", device: str = "cpu",
                 save: bool = True) -> dict[str, Any]:
    model = run.model(which).to(torch.device(device))
    bundle = run.data()
    logits, labels = predict(model, eval_loader(bundle, split), torch.device(device))
    preds = logits.argmax(1) if len(labels) else labels
    n = len(run.classes)
    cm = confusion_matrix(labels, preds, n)
    per_class = {c: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None) for i, c in enumerate(run.classes)}
    result = {"split": split, "checkpoint": which, "images": int(len(labels)),
              "top1": float((preds == labels).mean()) if len(labels) else float("nan"),
              "per_class": per_class, "confusion": cm.tolist(), "classes": run.classes}
    if save:
        write_json(run.path / f"eval-{split}.json", result)
        write_csv(run.path / f"confusion-{split}.csv",
                  [{"true": c, **{p: int(v) for p, v in zip(run.classes, row, strict=True)}}
                   for c, row in zip(run.classes, cm, strict=True)], ["true", *run.classes])
        _plot_confusion(cm, run.classes, run.path / f"confusion-{split}.png")
    return result


LABELLED_CLASSES = 60


def _plot_confusion(cm: np.ndarray, classes: list[str], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    # The figure grows with the classes up to 16 inches (2000 classes once asked Agg for a 99,000-pixel image);
    # past LABELLED_CLASSES the names would overlap, so the axes count classes and the CSV holds the names.
    side = min(16.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(max(4, side), max(3.5, side - 0.5)))
    norm = cm / np.maximum(1, cm.sum(1, keepdims=True))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if n <= LABELLED_CLASSES:
        ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
    else:
        ax.set_title(f"{n} classes: names in {Path(path).with_suffix('.csv').name}", fontsize=9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
