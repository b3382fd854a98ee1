"""Detection accuracy through the runtime being benchmarked: mAP50-95 and mAP50 on a run's validation images.

The artifact's raw outputs ([N, 4 + classes, anchors], see toolkit.detect.export) on letterboxed validation images
go through Ultralytics' NMS as predict() deploys it (one class per box, confidence >= 0.001, IoU 0.7, at most 300
boxes, the validator's settings) and are matched to the labels like Ultralytics' DetectionValidator (greedy, at
IoU 0.50:0.05:0.95, in input pixels); AP per class is Ultralytics' ap_per_class (COCO 101-point interpolation),
and mAP is its mean over the classes present in the labels.

onnx-int8 rows (detection int8 is exported on request only, its Detect head decode in float) go through the same
code; `edgespec export` gates that artifact with this module's det_map too: its mAP50-95 on the validation images
may drop at most toolkit.detect.quantize.INT8_MAX_MAP_DROP (0.02) below the fp32 ONNX file's, or it is not written.

Generalist baselines on a specialist's images, as for classification:
- closed set: only the score channels of the group's classes (exactly what slicing the head to the group gives);
- open set: all classes; a box the generalist gives a class outside the group detects none of the group.
"""

from __future__ import annotations

from typing import Any

from toolkit.detect.metrics import DetectSet, det_map, generalist_on_group, load_detect_set

__all__ = ["METHOD", "DetectSet", "det_map", "generalist_on_group", "is_detect", "load_detect_set"]

METHOD = ("mAP50-95 (accuracy) and mAP50 through the same runtime on the run's validation images (a specialist: its "
          "group's images, labels in its output order): Ultralytics' NMS with one class per box (conf 0.001, IoU 0.7, "
          "300 boxes), greedy matching at IoU 0.50:0.95 and Ultralytics' ap_per_class; generalist closed = its score "
          "channels of the group's classes only, open = all its classes (a box given a class outside the group "
          "detects nothing of the group); latency is the runtime call alone, NMS excluded like preprocessing")


def is_detect(entry: dict[str, Any]) -> bool:
    return entry.get("task") == "detect"
