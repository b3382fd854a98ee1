"""mAP50-95 and mAP50 of raw detector outputs on a run's validation images, computed as Ultralytics computes them.

Raw outputs [N, 4 + classes, anchors] (see exporters.detect) on letterboxed validation images go through
Ultralytics' NMS as predict() deploys it (one class per box, confidence >= 0.001, IoU 0.7, at most 300 boxes, the
validator's settings) and are matched to the labels like Ultralytics' DetectionValidator (greedy, at IoU
0.50:0.05:0.95, in input pixels); AP per class is Ultralytics' ap_per_class (COCO 101-point interpolation), and
mAP is its mean over the classes present in the labels. Used by the int8 export gate (exporters.detect) and
by the benchmark (benchmarks.scoring), so both measure the same thing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CONF, IOU, MAX_DET = 0.001, 0.7, 300
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
#: Validation images per run when --max-images is not given (letterboxed float32 images are held in memory).
DEFAULT_MAX_IMAGES = 500
@dataclass
class DetectSet:
    """A detection run's validation images (letterboxed, [0, 1] NCHW) and labels in input pixels."""

    run: str
    x: np.ndarray | None
    labels: list[np.ndarray] = field(default_factory=list)  # per image [k, 5]: class position, x1, y1, x2, y2
    class_ids: list[int] = field(default_factory=list)
    total: int = 0  # validation images the run has (x may hold fewer)
    error: str | None = None

    @property
    def images(self) -> int | None:
        return None if self.x is None else int(len(self.x))


def read_labels(image: Path, size: int) -> np.ndarray:
    """YOLO label lines of `image` (class cx cy w h, normalised) as [k, 5] class, x1, y1, x2, y2 in the pixels of
    the letterboxed input."""
    from PIL import Image

    from toolkit.detect.dataset import label_path
    from toolkit.detect.preprocess import letterbox_geometry

    lp = label_path(image)
    rows = [line.split() for line in lp.read_text().splitlines() if line.strip()] if lp.is_file() else []
    if not rows:
        return np.zeros((0, 5), np.float32)
    with Image.open(image) as im:
        w0, h0 = im.size
    r, _, _, left, top = letterbox_geometry((w0, h0), size)
    a = np.asarray([[float(v) for v in row[:5]] for row in rows], dtype=np.float64)
    cx, cy, w, h = a[:, 1] * w0 * r + left, a[:, 2] * h0 * r + top, a[:, 3] * w0 * r, a[:, 4] * h0 * r
    return np.stack([a[:, 0], cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(np.float32)


def load_detect_set(run_dir: str, max_images: int | None = None) -> DetectSet:
    """The run's validation split; an unreadable run gives a DetectSet with `error` set (accuracy is then null)."""
    from toolkit.detect.dataset import load_data
    from toolkit.detect.preprocess import letterbox_images
    from toolkit.detect.runs import open_detect_run
    from toolkit.errors import EdgespecError

    try:
        info = open_detect_run(run_dir)
        size = int(info["arch"]["input_size"][0])
        files = load_data(info["data"]).image_files("val")
        keep = files[:max_images or DEFAULT_MAX_IMAGES]
        return DetectSet(run_dir, letterbox_images(keep, size), [read_labels(f, size) for f in keep],
                         list(info["class_ids"]), len(files))
    except (EdgespecError, OSError) as exc:
        log.warning("no validation images for %s: %s", run_dir, exc)
        return DetectSet(run_dir, None, error=f"validation images unavailable: {str(exc).splitlines()[0]}")


def _match(pred_cls: np.ndarray, pred_box: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """[n_pred, 10] true positives at each IoU threshold (predictions in descending confidence), as Ultralytics'
    DetectionValidator.match_predictions (greedy): each label is claimed once per threshold."""
    correct = np.zeros((len(pred_cls), len(IOU_THRESHOLDS)), dtype=bool)
    if len(gt) == 0 or len(pred_cls) == 0:
        return correct
    g = gt[:, 1:5]
    lt = np.maximum(g[:, None, :2], pred_box[None, :, :2])
    rb = np.minimum(g[:, None, 2:], pred_box[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_g = (g[:, 2:] - g[:, :2]).prod(1)
    area_p = (pred_box[:, 2:] - pred_box[:, :2]).prod(1)
    iou = inter / (area_g[:, None] + area_p[None, :] - inter + 1e-7)
    iou = iou * (gt[:, :1] == pred_cls[None, :])
    matched = np.zeros((len(gt), len(IOU_THRESHOLDS)), dtype=bool)
    cols = np.arange(len(IOU_THRESHOLDS))
    for j in np.flatnonzero((iou >= IOU_THRESHOLDS.min()).any(0)):
        available = np.where(matched, 0, iou[:, j, None])
        k = available.argmax(0)
        correct[j] = available[k, cols] >= IOU_THRESHOLDS
        matched[k, cols] |= correct[j]
    return correct


def det_map(outputs: np.ndarray, labels: list[np.ndarray], classes: np.ndarray | None = None) -> dict[str, float]:
    """mAP50-95 and mAP50 of raw outputs [N, 4 + C, anchors] against `labels` (class positions).

    `classes` maps output class c to a label class (-1: none of them); default: the identity."""
    import torch
    from ultralytics.utils.metrics import ap_per_class
    from ultralytics.utils.nms import non_max_suppression

    tps, confs, pcls, tcls = [], [], [], []
    for i in range(len(outputs)):
        det = non_max_suppression(torch.from_numpy(np.ascontiguousarray(outputs[i:i + 1], dtype=np.float32)),
                                  conf_thres=CONF, iou_thres=IOU, multi_label=False, max_det=MAX_DET)[0].numpy()
        cls = det[:, 5].astype(np.int64)
        if classes is not None:
            cls = classes[cls] if len(cls) else cls
        gt = labels[i]
        tps.append(_match(cls, det[:, :4], gt))
        confs.append(det[:, 4])
        pcls.append(cls)
        tcls.append(gt[:, 0].astype(np.int64))
    target = np.concatenate(tcls) if tcls else np.zeros(0, np.int64)
    if len(target) == 0:
        return {"map50_95": None, "map50": None}
    ap = ap_per_class(np.concatenate(tps), np.concatenate(confs), np.concatenate(pcls), target)[5]
    return {"map50_95": float(ap.mean()), "map50": float(ap[:, 0].mean())}


def generalist_on_group(outputs: np.ndarray, dset: DetectSet, general_ids: list[int]
                        ) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """Closed-set and open-set mAP of the generalist's raw outputs on a group's validation images."""
    pos = {cid: i for i, cid in enumerate(general_ids)}
    if any(c not in pos for c in dset.class_ids):
        return None, None
    cols = [pos[c] for c in dset.class_ids]
    closed = det_map(np.concatenate([outputs[:, :4], outputs[:, [4 + c for c in cols]]], 1), dset.labels)
    to_group = np.full(len(general_ids), -1, dtype=np.int64)
    to_group[cols] = np.arange(len(cols))
    return closed, det_map(outputs, dset.labels, to_group)
