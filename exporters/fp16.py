"""fp32 ONNX -> fp16 weights and compute, with fp32 inputs and outputs (a Cast at each end)."""

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


def convert_fp16(src: str | Path, dst: str | Path, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    import warnings

    import onnx

    from .onnx_export import opset_of, save_checked, set_metadata

    convert, name = _converter()
    proto = onnx.load(str(src))
    with warnings.catch_warnings():  # it warns per clamped tiny weight; the parity check judges the result
        warnings.simplefilter("ignore")
        half = convert(proto, keep_io_types=True)
    # The converter leaves value_info saying float for tensors it re-typed around blocked ops (a YOLO Resize, cast
    # back to fp16 before a Concat), which the checker then rejects; the types are inferred again when checked.
    del half.graph.value_info[:]
    if metadata:
        set_metadata(half, metadata)
    save_checked(half, dst)
    return {"opset": opset_of(half), "converter": name}
