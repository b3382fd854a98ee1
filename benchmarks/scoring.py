"""Scoring per task: how the bench turns an artifact's outputs into a row's accuracy (the task plug-in of the bench).

One scorer per task of toolkit.tasks, looked up by the task name of a manifest entry (`scorer_for(entry)`): the
row's extra fields, the images an artifact is scored on, its score, the generalist's closed/open-set score on a
specialist's images, and what an estimate of it may not claim. rows.py asks the scorer and never the task.

Classification: top-1 through the runtime on the run's saved test split (benchmarks/accuracy.py).

Detection: Detection accuracy through the runtime being benchmarked: mAP50-95 and mAP50 on a run's validation images.

The artifact's raw outputs ([N, 4 + classes, anchors], see exporters.detect) on letterboxed validation images
go through Ultralytics' NMS as predict() deploys it (one class per box, confidence >= 0.001, IoU 0.7, at most 300
boxes, the validator's settings) and are matched to the labels like Ultralytics' DetectionValidator (greedy, at
IoU 0.50:0.05:0.95, in input pixels); AP per class is Ultralytics' ap_per_class (COCO 101-point interpolation),
and mAP is its mean over the classes present in the labels.

onnx-int8 rows (detection int8 is exported on request only, its Detect head decode in float) go through the same
code; `edgespec export` gates that artifact with this module's det_map too: its mAP50-95 on the validation images
may drop at most exporters.detect_int8.INT8_MAX_MAP_DROP (0.02) below the fp32 ONNX file's, or it is not written.

Generalist baselines on a specialist's images, as for classification:
- closed set: only the score channels of the group's classes (exactly what slicing the head to the group gives);
- open set: all classes; a box the generalist gives a class outside the group detects none of the group.
"""

from __future__ import annotations

from typing import Any, ClassVar

import benchmarks.accuracy as acc
from toolkit.tasks import task_of

METHOD_DETECT = (
    "mAP50-95 (accuracy) and mAP50 through the same runtime on the run's validation images (a specialist: its "
    "group's images, labels in its output order): Ultralytics' NMS with one class per box (conf 0.001, IoU 0.7, "
    "300 boxes), greedy matching at IoU 0.50:0.95 and Ultralytics' ap_per_class; generalist closed = its score "
    "channels of the group's classes only, open = all its classes (a box given a class outside the group "
    "detects nothing of the group); latency is the runtime call alone, NMS excluded like preprocessing")


class Scorer:
    task: ClassVar[str]
    row_fields: ClassVar[dict[str, Any]] = {}  # extra report-row fields of this task, with their empty values
    method: ClassVar[str | None] = None  # the report's methods entry for this task's accuracy (None: the default)

    def load(self, run: str, max_images: int | None) -> Any:
        """The images an artifact of `run` is scored on; `.x` None (and `.error`) when they cannot be read."""
        raise NotImplementedError

    def score(self, outputs: Any, images: Any) -> tuple[dict[str, Any], list[str]]:
        """Row fields (`accuracy` and the task's extras) and notes for an artifact's outputs on `images`."""
        raise NotImplementedError

    def generalist_on_group(self, outputs: Any, images: Any, general_ids: list[int]
                            ) -> tuple[Any, Any, dict[str, Any]]:
        """The generalist's closed- and open-set score on a specialist's images, and the task's extra fields."""
        raise NotImplementedError

    def estimate_refused(self, precision: str) -> str | None:
        """Why an estimate row of this precision is left unavailable (None: it may be estimated)."""
        return None

    def estimate_notes(self) -> list[str]:
        return []

    def prepare(self, report_dir: Any) -> None:
        """Set up what scoring needs before the first artifact (e.g. Ultralytics, offline)."""


class ClassifyScorer(Scorer):
    task = "classify"

    def load(self, run: str, max_images: int | None) -> acc.TestSet:
        return acc.load_test_set(run, max_images)

    def score(self, outputs: Any, images: acc.TestSet) -> tuple[dict[str, Any], list[str]]:
        return {"accuracy": acc.top1(outputs, images.y)}, []

    def generalist_on_group(self, outputs: Any, images: acc.TestSet, general_ids: list[int]
                            ) -> tuple[Any, Any, dict[str, Any]]:
        closed, open_ = acc.generalist_on_group(outputs, images.y, general_ids, images.class_ids)
        return closed, open_, {}


class DetectScorer(Scorer):
    task = "detect"
    row_fields = {"task": "detect", "metric": "mAP50-95", "map50": None, "generalist_map50_closed": None,
                  "generalist_map50_open": None}
    method = METHOD_DETECT

    def load(self, run: str, max_images: int | None) -> Any:
        from toolkit.detect.metrics import load_detect_set

        return load_detect_set(run, max_images)

    def score(self, outputs: Any, images: Any) -> tuple[dict[str, Any], list[str]]:
        from toolkit.detect.metrics import det_map

        m = det_map(outputs, images.labels)
        notes = [f"mAP on the first {images.images} of {images.total} validation images (--max-images)"] \
            if images.images < images.total else []
        return {"accuracy": m["map50_95"], "map50": m["map50"]}, notes

    def generalist_on_group(self, outputs: Any, images: Any, general_ids: list[int]
                            ) -> tuple[Any, Any, dict[str, Any]]:
        from toolkit.detect.metrics import generalist_on_group

        closed, open_ = generalist_on_group(outputs, images, general_ids)
        return ((closed or {}).get("map50_95"), (open_ or {}).get("map50_95"),
                {"generalist_map50_closed": (closed or {}).get("map50"),
                 "generalist_map50_open": (open_ or {}).get("map50")})

    def estimate_refused(self, precision: str) -> str | None:
        if precision != "int8":
            return None
        return ("no int8 estimate for detection models: onnx-int8 ships only mAP-gated and measured on the host; "
                "tensorrt-int8 is not exported (its mAP was never measured)")

    def estimate_notes(self) -> list[str]:
        return ["estimate: FLOPs and bytes counted from the exported ONNX graph (benchmarks/estimate.py), not "
                "Ultralytics' GFLOPs"]

    def prepare(self, report_dir: Any) -> None:
        from toolkit.detect.offline import ultralytics_env

        ultralytics_env(report_dir)  # mAP uses Ultralytics: offline, its settings in the reports


SCORERS: dict[str, Scorer] = {s.task: s for s in (ClassifyScorer(), DetectScorer())}


def scorer_for(entry: dict[str, Any]) -> Scorer:
    return SCORERS[task_of(entry).name]
