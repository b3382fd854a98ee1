"""Detection int8: the Detect head's decode kept float, calibration on the run's training images, and the mAP gate.

Quantizing the whole graph took mAP50-95 to 0.00 (pixel boxes and [0, 1] scores share one output tensor, hence one
scale), so the nodes after the head's last convolutions stay float; the artifact ships only when its mAP50-95 on
the validation images is within INT8_MAX_MAP_DROP of the fp32 ONNX file's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toolkit.detect.dataset import load_data
from toolkit.detect.preprocess import letterbox_images, onnx_outputs
from toolkit.detect.runs import open_detect_run
from toolkit.errors import ExportCheckError, UserError

#: The gate: onnx-int8 ships only when its mAP50-95 on the validation images is at most this far below fp32's.
INT8_MAX_MAP_DROP = 0.02

_SHAPE_OPS = {"Reshape", "Concat", "Flatten", "Transpose", "Squeeze", "Unsqueeze"}


def head_tail_nodes(proto: Any) -> list[str]:
    """Names of the Detect head's decode nodes, kept float in int8: everything downstream of the head's last
    convolutions (cv2/cv3's final 1x1 convs, the ones whose outputs are only reshaped, not activated): DFL softmax
    and conv, box decode, concat, sigmoid. The head is the module that produces the graph output (Ultralytics
    names its nodes /model.<index>/...), found from the graph rather than from a fixed index."""
    nodes = list(proto.graph.node)
    out = proto.graph.output[0].name
    producer = next((n for n in nodes if out in n.output), None)
    parts = producer.name.split("/") if producer is not None else []
    if len(parts) < 3 or not parts[1].startswith("model."):
        raise ExportCheckError(f"cannot find the Detect head in the ONNX graph (output {out!r} comes from node "
                               f"{getattr(producer, 'name', None)!r}); int8 needs it to keep the head's decode float")
    prefix = f"/{parts[1]}/"
    consumers: dict[str, list[Any]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    last = [n for n in nodes if n.name.startswith(prefix) and n.op_type == "Conv"
            and all(c.op_type in _SHAPE_OPS for o in n.output for c in consumers.get(o, []))]
    tail: set[str] = set()
    stack = [t for n in last for t in n.output]
    while stack:
        for c in consumers.get(stack.pop(), []):
            if c.name not in tail:
                tail.add(c.name)
                stack.extend(c.output)
    if producer.name not in tail:
        raise ExportCheckError(f"cannot find the Detect head's last convolutions under {prefix} in the ONNX graph; "
                               "int8 needs them to keep the head's decode float")
    return sorted(tail)


def calibration_images(run_dir: Path, count: int, method: str) -> Any:
    """exporters.quantize.CalibrationSet of a seeded sample of `count` training images, letterboxed like inference."""
    from .quantize import CALIB_SEED, CalibrationSet, hash_images

    info = open_detect_run(run_dir)
    files = load_data(info["data"]).image_files("train")
    if not files:
        raise UserError(f"{run_dir} has no training images to calibrate int8 with; export its float formats")
    picks = np.sort(np.random.default_rng(CALIB_SEED).choice(len(files), size=min(count, len(files)), replace=False))
    images = letterbox_images([files[int(i)] for i in picks], int(info["arch"]["input_size"][0]))
    facts = {"split": "train", "images": int(len(picks)), "requested": int(count), "method": method,
             "seed": CALIB_SEED, "sha256": hash_images(images), "preprocess": "letterbox (grey 114), RGB [0, 1]"}
    return CalibrationSet(images, facts)


def int8_gate(run_dir: Path, fp32: Path, int8: Path, label: str, max_drop: float | None = None) -> dict[str, Any]:
    """mAP50-95 of the int8 and fp32 ONNX files on the run's validation images, through the bench's own code
    (toolkit.detect.metrics); raises ExportCheckError (one line, the figures) when int8 drops more than allowed."""
    from toolkit.detect.metrics import det_map, load_detect_set

    tol = INT8_MAX_MAP_DROP if max_drop is None else max_drop
    dset = load_detect_set(str(run_dir))
    if dset.x is None or not any(len(lab) for lab in dset.labels):
        raise ExportCheckError(f"{label}: int8 needs labelled validation images to measure its mAP drop "
                               f"({dset.error or 'no labels'}); nothing was written")
    ref = det_map(onnx_outputs(fp32, dset.x)[0], dset.labels)
    got = det_map(onnx_outputs(int8, dset.x)[0], dset.labels)
    drop = ref["map50_95"] - got["map50_95"]
    summary = (f"mAP50-95 {got['map50_95']:.4f} int8 vs {ref['map50_95']:.4f} fp32 ONNX (drop {drop:+.4f}, "
               f"allowed {tol}) on {len(dset.x)} validation images")
    if not drop <= tol:
        raise ExportCheckError(f"{label} refused: {summary}; nothing was written (another --calib-method may pass; "
                               "or export the float formats)")
    return {"reference": "onnx fp32 (onnxruntime cpu)", "split": "val", "images": int(len(dset.x)), "precision": "int8",
            "passed": True, "metric": "mAP50-95", "map50_95": got["map50_95"], "map50": got["map50"],
            "reference_map50_95": ref["map50_95"], "reference_map50": ref["map50"], "map50_95_drop": drop,
            "max_map50_95_drop": tol, "summary": summary}
