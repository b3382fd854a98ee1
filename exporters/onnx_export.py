"""PyTorch -> ONNX: dynamic batch, checked, optionally simplified, with edgespec's metadata inside the file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import EdgespecError, UserError

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MAX_BATCH = 4096  # upper bound of the symbolic batch dimension; far above any batch edgespec benchmarks


def export_onnx(model: nn.Module, path: str | Path, input_chw: tuple[int, int, int], opset: int = 20,
                simplify: bool = True, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write `model` as ONNX to `path`: input float32 [batch, C, H, W] -> logits float32 [batch, classes].

    torch 2.14's dynamo exporter (torch.export + onnxscript) is used on purpose: for smallcnn, mobilenet_v3_small
    and resnet18 it yields a clean graph (batch-norm folded into conv, no Identity nodes: resnet18 49 nodes vs
    the TorchScript exporter's 65) with a symbolic batch dimension, and the TorchScript exporter is deprecated.
    """
    import onnx
    import torch

    path = Path(path)
    model = model.eval()
    example = torch.randn(2, *input_chw)  # batch 2: a batch of 1 would let torch.export specialise the dimension
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), opset_version=opset,
                          external_data=False, optimize=True, verbose=False)
    except Exception as exc:  # noqa: BLE001 - torch.export raises many types; the user needs one message
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EdgespecError(f"torch.onnx.export failed for {type(model).__name__}: {first}") from exc
    proto = onnx.load(str(path))
    if simplify:
        proto = simplify_model(proto)
    if metadata:
        set_metadata(proto, metadata)
    proto.producer_name = "edgespec"
    save_checked(proto, path)
    return {"opset": opset_of(proto), "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
            "exporter": "torch.onnx.export(dynamo=True)", "simplified": simplify, "nodes": len(proto.graph.node)}


def simplify_model(proto):
    import onnxslim

    before = len(proto.graph.node)
    slim = onnxslim.slim(proto)
    log.info("onnxslim: %d -> %d nodes", before, len(slim.graph.node))
    return slim


def save_checked(proto, path: str | Path) -> None:
    """Save and run the full ONNX checker (with shape inference) on what was written."""
    import onnx

    onnx.save(proto, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise EdgespecError(f"ONNX checker rejected {Path(path).name}: {str(exc).splitlines()[0][:200]}") from exc


def opset_of(proto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def set_metadata(proto, metadata: dict[str, Any]) -> None:
    """Store each value JSON-encoded in metadata_props (replacing keys already there)."""
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    for key, value in keep:
        proto.metadata_props.add(key=key, value=value)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=json.dumps(value))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """edgespec's metadata from an .onnx or .ort file (through onnxruntime, which reads both)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    raw = session.get_modelmeta().custom_metadata_map
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def model_metadata(run, checkpoint_sha256: str, role: str, model_name: str) -> dict[str, Any]:
    """What travels inside every exported file: enough to preprocess inputs and name outputs without edgespec."""
    from toolkit import __version__

    pre = run.info["preprocess"]
    return {
        "model": model_name,
        "role": role,
        "group": run.info.get("group"),
        "classes": run.classes,
        "class_ids": run.class_ids,
        "mean": pre["mean"],
        "std": pre["std"],
        "input_size": list(pre["input_size"]),
        "channels": pre["channels"],
        "source_checkpoint_sha256": checkpoint_sha256,
        "edgespec_version": __version__,
    }
