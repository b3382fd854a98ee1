"""fp16 overflow guard: find the activations float16 cannot hold on real images and keep their ops in float32.

A float16 tensor holds magnitudes up to 65504 and keeps full precision only above 2**-14 (6.1e-5, the smallest
normal number). An fp32 model whose activations leave that range on real inputs (a large activation before a
normalisation, a sum of squares, an unscaled logit) turns into inf/NaN or zeros when every op runs in fp16, which
is what a strongly typed TensorRT engine built from a float16 ONNX file does.

The guard runs the fp32 ONNX model with ONNX Runtime on the calibration images, records max |x| of every float
activation, and marks a tensor unsafe when max |x| exceeds FP16_MAX / headroom (headroom: unseen images go further
than the calibration set) or when it is non-zero but below the smallest normal fp16 number. The node that produces
an unsafe tensor and every node that consumes it stay in float32; the converter puts explicit Cast nodes at the
borders. The manifest records which nodes and why; the parity check then decides.

The ranges are read from the fp32 graph directly, never inferred from an fp16 run: ONNX Runtime's CPU provider
computes several fp16 ops in fp32 internally, so an fp16 run on this host can hide an overflow a GPU would show.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0 ** -14
DEFAULT_HEADROOM = 2.0  # unsafe above 32752: an image outside the calibration set may go twice as far
_BATCH = 8  # every activation of the batch is held at once while ranges are read


def _float_outputs(proto) -> list[str]:
    """Names of the float32 activations (node outputs) of an fp32 model, typed by shape inference."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    consts = {n.output[0] for n in proto.graph.node if n.op_type == "Constant"}
    return [o for n in proto.graph.node for o in n.output
            if o and o not in consts and types.get(o) == onnx.TensorProto.FLOAT]


def name_nodes(proto) -> None:
    """Give every unnamed node a unique name (the converter's block list is by node name)."""
    seen = {n.name for n in proto.graph.node if n.name}
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in seen:
                name += "_"
            node.name = name
            seen.add(name)


def tensor_ranges(proto, images: np.ndarray, input_name: str) -> dict[str, dict[str, float]]:
    """max |x| and the smallest non-zero |x| of every float activation of the fp32 model on `images`."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    names = _float_outputs(probe)
    have = {o.name for o in probe.graph.output}
    for n in names:
        if n not in have:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph as written, unfused
    session = ort.InferenceSession(probe.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    stats = {n: {"max_abs": 0.0, "min_nonzero_abs": float("inf")} for n in outputs}
    for start in range(0, len(images), _BATCH):
        batch = np.ascontiguousarray(images[start:start + _BATCH], dtype=np.float32)
        for name, value in zip(outputs, session.run(outputs, {input_name: batch}), strict=True):
            a = np.abs(np.asarray(value, dtype=np.float64))
            if a.size == 0:
                continue
            s = stats[name]
            finite = a[np.isfinite(a)]
            s["max_abs"] = max(s["max_abs"], float(a.max()))
            nz = finite[finite > 0]
            if nz.size:
                s["min_nonzero_abs"] = min(s["min_nonzero_abs"], float(nz.min()))
    return {n: s for n, s in stats.items() if n in set(names)}


def unsafe_tensors(ranges: dict[str, dict[str, float]], headroom: float = DEFAULT_HEADROOM) -> dict[str, str]:
    """tensor -> reason ('overflow': max |x| above FP16_MAX / headroom; 'underflow': every non-zero value below
    the smallest normal fp16 number, so fp16 keeps few or no significant bits of it)."""
    limit = FP16_MAX / headroom
    out = {}
    for name, s in ranges.items():
        if not np.isfinite(s["max_abs"]) or s["max_abs"] > limit:
            out[name] = "overflow"
        elif 0 < s["max_abs"] < FP16_MIN_NORMAL:
            out[name] = "underflow"
    return out


def nodes_to_keep(proto, unsafe: dict[str, str], ranges: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """The producer and the consumers of each unsafe tensor, in graph order, with why."""
    keep: dict[str, dict[str, Any]] = {}
    for node in proto.graph.node:
        for role, tensors in (("produces", node.output), ("consumes", node.input)):
            for t in tensors:
                if t in unsafe and node.name not in keep:
                    keep[node.name] = {"node": node.name, "op": node.op_type, "tensor": t, "role": role,
                                       "reason": unsafe[t], "max_abs": ranges[t]["max_abs"]}
    return list(keep.values())


def guard(proto, images: np.ndarray, input_name: str, headroom: float = DEFAULT_HEADROOM
          ) -> tuple[list[str], dict[str, Any]]:
    """(names of nodes to keep in float32, the facts for the manifest). Names unnamed nodes of `proto` in place."""
    name_nodes(proto)
    ranges = tensor_ranges(proto, images, input_name)
    unsafe = unsafe_tensors(ranges, headroom)
    kept = nodes_to_keep(proto, unsafe, ranges)
    worst = max((s["max_abs"] for s in ranges.values()), default=0.0)
    facts = {"images": int(len(images)), "headroom": headroom, "overflow_above_abs": FP16_MAX / headroom,
             "underflow_below_abs": FP16_MIN_NORMAL, "activations_checked": len(ranges),
             "largest_activation_abs": worst, "unsafe_tensors": unsafe, "kept_fp32": kept,
             "how": "max |x| of every float activation of the fp32 ONNX model on the calibration images "
                    "(ONNX Runtime CPU, graph optimisations off)"}
    if kept:
        log.warning("fp16 guard: keeping %d op(s) in float32 (%s): their activations leave fp16's range on the "
                    "calibration images", len(kept), ", ".join(k["node"] for k in kept[:5]))
    return [k["node"] for k in kept], facts


def drop_round_trips(proto) -> int:
    """Cast(to fp16) -> Cast(to fp32) pairs between two float32 ops -> the fp32 tensor itself; returns how many.

    The converter casts every output of a kept-float32 op back to fp16 and every input of one up to fp32, so a
    tensor between two kept ops would still pass through fp16 (inf above 65504), defeating the guard."""
    import onnx

    nodes = list(proto.graph.node)
    by_output = {o: n for n in nodes for o in n.output}

    def cast_to(node, elem: int) -> bool:
        return node.op_type == "Cast" and any(a.name == "to" and a.i == elem for a in node.attribute)

    fixed = 0
    for node in nodes:
        if not cast_to(node, onnx.TensorProto.FLOAT):
            continue
        inner = by_output.get(node.input[0])
        if inner is not None and cast_to(inner, onnx.TensorProto.FLOAT16):
            node.input[0] = inner.input[0]
            fixed += 1
    used = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
    dead = [n for n in proto.graph.node if cast_to(n, onnx.TensorProto.FLOAT16) and n.output[0] not in used]
    for n in dead:
        proto.graph.node.remove(n)
    return fixed


def guard_file(src: str | Path, images: np.ndarray, input_name: str, headroom: float = DEFAULT_HEADROOM):
    """`guard` on an ONNX file: (the loaded, node-named proto, nodes to keep, facts)."""
    import onnx

    proto = onnx.load(str(src))
    keep, facts = guard(proto, images, input_name, headroom)
    return proto, keep, facts


def run_as_stored(path: str | Path, images: np.ndarray, input_name: str) -> np.ndarray:
    """First output of an fp16 ONNX file with every activation materialised in its declared type.

    ONNX Runtime's CPU provider runs many fp16 ops in fp32 and drops the casts between consecutive ones, so an
    fp16 tensor that overflows between two such ops never exists on this host. Declaring every node output a graph
    output forces each one to be stored as the graph types it (fp16: inf above 65504), as a strongly typed GPU
    engine stores it. Used by the tests and available for checking an fp16 file before a TensorRT build.
    """
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    have = {o.name for o in proto.graph.output}
    for node in proto.graph.node:
        for o in node.output:
            if o and o not in have and types.get(o) in (onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT):
                proto.graph.output.append(onnx.helper.make_tensor_value_info(o, types[o], None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    first = session.get_outputs()[0].name
    outs = [session.run([first], {input_name: np.ascontiguousarray(images[s:s + _BATCH], dtype=np.float32)})[0]
            for s in range(0, len(images), _BATCH)]
    return np.concatenate(outs).astype(np.float32)
