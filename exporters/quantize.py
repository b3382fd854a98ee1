"""Static int8 quantization with ONNX Runtime, calibrated on the run's own training images.

The result is QDQ with symmetric int8 weights; activation type, weight range (reduce_range), per-channel weights
and the ops kept in float come from the target's recipe (exporters/int8_recipes.py, one table with the
measurements behind each entry): u8 activations with 8-bit weights on x86 with VNNI/AMX, 7-bit weights on x86
without VNNI (int16 saturation), symmetric s8 for TensorRT's explicit quantization and Arm. The calibration set's
hash is recorded so a changed data set or preprocessing is detectable.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import EdgespecError

from .int8_recipes import Int8Recipe

log = logging.getLogger(__name__)

CALIB_SEED = 0
CALIB_BATCH = 16


@dataclass
class CalibrationSet:
    images: np.ndarray  # float32 NCHW, normalised exactly as at inference
    facts: dict[str, Any]


def calibration_set(run, count: int, method: str) -> CalibrationSet:
    """A seeded sample of `count` training images of the run (all of them when it has fewer)."""
    import torch

    data = run.data()
    ds = data.dataset("train")
    n = len(ds)
    if n == 0:
        raise EdgespecError(f"run {run.path} has no training images to calibrate int8 with")
    rng = np.random.default_rng(CALIB_SEED)
    picks = np.sort(rng.choice(n, size=min(count, n), replace=False))
    images = torch.stack([ds[int(i)][0] for i in picks]).numpy().astype(np.float32, copy=False)
    if len(picks) < count:
        log.warning("%s has %d training images; calibrating on all of them (asked for %d)", run.path.name, n, count)
    facts = {"split": "train", "images": int(len(picks)), "requested": int(count), "method": method,
             "seed": CALIB_SEED, "sha256": hash_images(images), "data_fingerprint": data.split.get("fingerprint")}
    return CalibrationSet(images, facts)


def hash_images(images: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str(tuple(images.shape)).encode())
    h.update(np.ascontiguousarray(images, dtype=np.float32).tobytes())
    return h.hexdigest()


def calibration_is_current(run, calibration: dict[str, Any]) -> bool:
    """Whether the run's data and preprocessing still give the calibration set an artifact was quantized with."""
    now = calibration_set(run, int(calibration["requested"]), str(calibration["method"]))
    return now.facts["sha256"] == calibration["sha256"]


def _reader(images: np.ndarray, input_name: str):
    from onnxruntime.quantization import CalibrationDataReader

    # equal batches: ORT's histogram calibrators (entropy, percentile) fail on a shorter last batch
    batch = max(b for b in range(1, CALIB_BATCH + 1) if len(images) % b == 0)

    class _Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(range(0, len(images), batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self._it, None)
            return None if start is None else {input_name: images[start:start + batch]}

    return _Batches()


def _entropy_ranges(model: Path, calib: CalibrationSet, input_name: str, tmp: Path) -> dict[str, Any]:
    """Entropy ranges from a 2048-bin histogram (as TensorRT's entropy calibrator uses), passed as a cache.

    quantize_static alone builds the entropy histogram with 128 bins for 128 quantized bins, so the search has
    nothing to clip and entropy gives exactly the min/max ranges (measured on the digits models).
    """
    import inspect

    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        log.warning("this onnxruntime cannot take precomputed ranges; entropy uses its 128-bin histogram")
        calib.facts.update(histogram_bins=128, quantized_bins=128)
        return {}
    calibrator = create_calibrator(model, [], augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": 2048, "num_quantized_bins": 128})
    calibrator.collect_data(_reader(calib.images, input_name))
    cache = tmp / "ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    calib.facts.update(histogram_bins=2048, quantized_bins=128)
    return {"calibration_cache_path": str(cache)}


def quantize_int8(src: str | Path, dst: str | Path, calib: CalibrationSet, input_name: str,
                  metadata: dict[str, Any] | None = None,
                  exclude: Callable[[Any], list[str]] | None = None,
                  skip_symbolic_shape: bool = False, symmetric_activations: bool = True,
                  recipe: Int8Recipe | None = None) -> dict[str, Any]:
    """`src` as QDQ int8 into `dst`. `exclude(model)` names the nodes of the pre-processed model to keep in float
    (quantize_static's nodes_to_exclude; detection keeps its box decode so); `skip_symbolic_shape` for graphs ONNX
    Runtime's symbolic shape inference cannot complete (Ultralytics' detectors). `symmetric_activations=False`
    gives uint8 asymmetric activations: ONNX Runtime's CPU default and its fast path (S8S8 QDQ measured 3x slower
    than fp32 on the host's Xeon for yolo11n at 64 px, U8S8 1.2x faster), for files no TensorRT engine is built from.
    `recipe` (exporters.int8_recipes) overrides `symmetric_activations` and also sets reduce_range, per-channel
    weights and the op types kept in float; without one, weights are per-channel in 7 bits."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .onnx_export import opset_of, save_checked, set_metadata

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calib.facts["method"]]
    if recipe is None:
        recipe = Int8Recipe("custom", "S8" if symmetric_activations else "U8", reduce_range=True)
    symmetric_activations = recipe.symmetric_activations
    dst = Path(dst)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # shape inference + ORT's basic graph optimisations, as ONNX Runtime recommends before quantizing
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=skip_symbolic_shape)
        graph = onnx.load(str(pre)) if exclude or recipe.float_ops else None
        excluded = sorted(exclude(graph)) if exclude else []
        excluded += sorted(n.name for n in graph.graph.node if n.op_type in recipe.float_ops) if graph else []
        out = Path(tmp) / "int8.onnx"
        printed = io.StringIO()  # the histogram calibrators print progress; keep it out of stdout
        kwargs: dict[str, Any] = {"nodes_to_exclude": excluded} if excluded else {}
        try:
            with contextlib.redirect_stdout(printed):
                if method == CalibrationMethod.Entropy:
                    kwargs.update(_entropy_ranges(pre, calib, input_name, Path(tmp)))
                elif method == CalibrationMethod.Percentile:
                    calib.facts.update(histogram_bins=2048, percentile=99.999)  # ONNX Runtime's defaults
                act = QuantType.QInt8 if symmetric_activations else QuantType.QUInt8
                quantize_static(str(pre), str(out), _reader(calib.images, input_name), quant_format=QuantFormat.QDQ,
                                per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
                                activation_type=act,
                                weight_type=QuantType.QInt8,
                                calibrate_method=method, extra_options={"ActivationSymmetric": symmetric_activations,
                                                                        "WeightSymmetric": True}, **kwargs)
        finally:
            log.debug("quantize_static: %s", printed.getvalue())
        proto = onnx.load(str(out))
    _drop_unused_domains(proto)
    if metadata:
        set_metadata(proto, metadata)
    save_checked(proto, dst)
    ops = sorted({n.op_type for n in proto.graph.node})
    weights = ("int8 symmetric, 7-bit range (no int16 saturation on CPUs without VNNI)" if recipe.reduce_range
               else "int8 symmetric, full 8-bit range")
    details = {"opset": opset_of(proto), "quant_format": "QDQ", "per_channel": recipe.per_channel,
               "activations": "int8 symmetric" if symmetric_activations else "uint8 asymmetric",
               "weights": weights, "ops": ops}
    if exclude or recipe.float_ops:
        details["float_nodes"] = excluded
    return details


def _drop_unused_domains(proto) -> None:
    """ORT's pre-processing saves every domain it knows as an opset import; keep those the graph uses (a cleaner
    file for other parsers such as TensorRT's)."""
    used = {n.domain for n in proto.graph.node} | {""}
    keep = [o for o in proto.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del proto.opset_import[:]
    proto.opset_import.extend(keep)
