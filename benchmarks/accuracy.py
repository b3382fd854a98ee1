"""Accuracy through the runtime being benchmarked, on the run's saved test split (the group's images)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class TestSet:
    """A run's test images, preprocessed as the run says, labels in the run's output order."""

    run: str
    x: np.ndarray | None
    y: np.ndarray | None
    class_ids: list[int]
    error: str | None = None

    @property
    def images(self) -> int | None:
        return None if self.y is None else int(len(self.y))


def load_test_set(run_dir: str, max_images: int | None = None) -> TestSet:
    """The run's test split; an unreadable run gives a TestSet with `error` set (accuracy is then null)."""
    from toolkit.data import stack
    from toolkit.errors import EdgespecError
    from toolkit.runs import Run

    try:
        run = Run.open(run_dir)
        x, y = stack(run.data().dataset("test"), max_images)
    except (EdgespecError, OSError) as exc:
        log.warning("no test images for %s: %s", run_dir, exc)
        return TestSet(run_dir, None, None, [], f"test images unavailable: {str(exc).splitlines()[0]}")
    return TestSet(run_dir, x.numpy().astype(np.float32), y.numpy().astype(np.int64), run.class_ids)


def logits_of(runner, x: np.ndarray, batch_size: int) -> np.ndarray:
    if runner.fixed_batch is not None:
        batch_size = runner.fixed_batch
    outs = []
    for i in range(0, len(x), batch_size):
        chunk = x[i:i + batch_size]
        n = len(chunk)
        if runner.fixed_batch is not None and n < batch_size:  # pad the last batch of a fixed-batch model
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
        outs.append(np.asarray(runner.run(np.ascontiguousarray(chunk)), dtype=np.float32)[:n])
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def top1(logits: np.ndarray, labels: np.ndarray) -> float | None:
    if len(labels) == 0:
        return None
    return float((logits.argmax(1) == labels).mean())


def generalist_on_group(logits: np.ndarray, labels: np.ndarray, general_ids: list[int], group_ids: list[int]
                        ) -> tuple[float | None, float | None]:
    """Closed-set (argmax over the group's classes only) and open-set (argmax over all classes; a prediction
    outside the group is wrong) accuracy of generalist logits on a group's images. Labels are positions in
    `group_ids`; `general_ids` is the generalist's output order."""
    if len(labels) == 0:
        return None, None
    pos = {cid: i for i, cid in enumerate(general_ids)}
    missing = [c for c in group_ids if c not in pos]
    if missing:
        return None, None
    cols = np.asarray([pos[c] for c in group_ids])
    closed = float((logits[:, cols].argmax(1) == labels).mean())
    open_pred = logits.argmax(1)
    open_ = float((open_pred == cols[labels]).mean())
    return closed, open_


def same_run(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()
