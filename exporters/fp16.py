"""fp32 ONNX -> fp16 weights and compute, with fp32 inputs and outputs (a Cast at each end).

With calibration images, the fp16 guard (exporters/fp16_guard.py) first finds the ops whose activations leave
fp16's range on them; those stay in float32 behind explicit Casts, and the details say which. This is the file a
strongly typed TensorRT engine (`tensorrt-fp16`) is built from, so its types are the engine's precision.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _converter() -> tuple[Any, str]:
    """onnxconverter-common is the converter's maintained home (a declared dependency); onnxruntime ships a copy
    of it under onnxruntime.transformers, used only where onnxconverter-common is missing."""
    try:
        from onnxconverter_common import float16

        return float16.convert_float_to_float16, "onnxconverter_common.float16"
    except ImportError:
        from onnxruntime.transformers import float16

        log.info("onnxconverter-common not installed; using onnxruntime.transformers.float16")
        return float16.convert_float_to_float16, "onnxruntime.transformers.float16"


def convert_fp16(src: str | Path, dst: str | Path, metadata: dict[str, Any] | None = None,
                 guard_images: Any = None, input_name: str = "input", guard: bool = True) -> dict[str, Any]:
    """Convert; with `guard_images` (float32 NCHW) and `guard`, overflow-prone ops stay in float32."""
    import warnings

    import onnx

    from .fp16_guard import FP16_MAX, drop_round_trips, guard_file
    from .onnx_export import opset_of, save_checked, set_metadata

    convert, name = _converter()
    facts = None
    keep: list[str] = []
    if guard and guard_images is not None:
        proto, keep, facts = guard_file(src, guard_images, input_name)
    else:
        proto = onnx.load(str(src))
    with warnings.catch_warnings():  # it warns per clamped tiny weight; the parity check judges the result
        warnings.simplefilter("ignore")
        # max_finite_val: constants up to fp16's own maximum survive (the converter's default clamps at 1e4)
        half = convert(proto, keep_io_types=True, node_block_list=keep or None,
                       max_finite_val=FP16_MAX if facts is not None else 1e4)
    if keep:
        facts["fp16_round_trips_removed"] = drop_round_trips(half)
    # The converter leaves value_info saying float for tensors it re-typed around blocked ops (a YOLO Resize, cast
    # back to fp16 before a Concat), which the checker then rejects; the types are inferred again when checked.
    del half.graph.value_info[:]
    if metadata:
        set_metadata(half, metadata)
    save_checked(half, dst)
    info: dict[str, Any] = {"opset": opset_of(half), "converter": name}
    if facts is not None:
        info["fp16_guard"] = facts
    return info
