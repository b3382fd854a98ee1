"""Roofline estimates for devices this host cannot serve: counted FLOPs and bytes against published peaks.

The estimate is a lower bound, `max(FLOPs / peak compute, bytes / peak bandwidth)`, with FLOPs and bytes
counted from the ONNX graph at the row's batch size:
- FLOPs: 2 per multiply-accumulate in Conv / ConvTranspose / Gemm / MatMul (and their quantized forms),
  plus one per output element of every other node (activations, additions, normalisation, pooling).
- bytes: every weight read once at the row's precision, plus every activation tensor written once and read
  once at the row's precision (no fusion, no cache reuse), plus the input and output.
It ignores launch overhead, kernel efficiency and host transfers, so real latency is higher; the report
labels every such figure `estimate` and says how it was computed.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

METHOD = ("roofline lower bound max(FLOPs/peak compute, bytes/peak memory bandwidth); FLOPs and bytes counted "
          "from the ONNX graph at this precision and batch size; ignores runtime overhead, so real latency is higher")
ELEM_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
_MAC_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul", "ConvInteger",
            "MatMulInteger"}
_FREE_OPS = {"Shape", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Constant", "Cast", "Transpose",
             "QuantizeLinear", "DequantizeLinear", "Gather", "Concat", "Slice"}


def _dims(vi) -> list[int] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if not d.HasField("dim_value"):
            return None
        out.append(int(d.dim_value))
    return out


def _numel(shape: list[int] | None) -> int:
    return math.prod(shape) if shape else 0


def _macs(node, shapes: dict[str, list[int]], inits: dict[str, list[int]]) -> int:
    """Multiply-accumulates of one compute node (0 where shapes are unknown)."""
    op = node.op_type
    out = shapes.get(node.output[0])
    if out is None:
        return 0
    if op in ("Conv", "ConvInteger", "QLinearConv", "ConvTranspose"):
        w_name = node.input[3] if op == "QLinearConv" else node.input[1]
        w = inits.get(w_name) or shapes.get(w_name)
        if not w:
            return 0
        kernel = math.prod(w[1:])  # (Cin/group) * kh * kw for Conv; (Cout/group) * kh * kw for ConvTranspose
        if op == "ConvTranspose":
            x = shapes.get(node.input[0])
            return _numel(x) * kernel if x else 0
        return _numel(out) * kernel
    # Gemm / MatMul family: output elements times the shared dimension K
    a_name = node.input[0]
    a = shapes.get(a_name) or inits.get(a_name)
    if not a:
        return 0
    trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
    k = a[-2] if (op == "Gemm" and trans_a) else a[-1]
    return _numel(out) * k


@lru_cache(maxsize=64)
def _count(path: str, mtime: float, batch_size: int) -> dict[str, Any]:
    import onnx

    model = onnx.load(path)
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    for inp in graph.input:
        if inp.name in init_names:
            continue
        dim0 = inp.type.tensor_type.shape.dim[0]
        dim0.Clear()
        dim0.dim_value = batch_size
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    shapes: dict[str, list[int]] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        s = _dims(vi)
        if s is not None:
            shapes[vi.name] = s
    inits = {i.name: list(i.dims) for i in graph.initializer}
    for node in graph.node:  # Constant nodes hold weights in some exporters' graphs
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    inits[node.output[0]] = list(attr.t.dims)
    weight_elems = sum(_numel(d) or 1 for d in inits.values())
    macs, other, act_elems, unknown = 0, 0, 0, 0
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        outs = [shapes.get(o) for o in node.output if o]
        if any(o is None for o in outs):
            unknown += 1
        elems = sum(_numel(o) for o in outs if o)
        if node.op_type in _MAC_OPS:
            macs += _macs(node, shapes, inits)
        elif node.op_type not in _FREE_OPS:
            other += elems
        if node.op_type not in _FREE_OPS or node.op_type == "Concat":
            act_elems += elems
    io_elems = sum(_numel(shapes.get(i.name)) for i in graph.input if i.name not in init_names)
    kernels = sum(1 for node in graph.node if node.op_type in _MAC_OPS)  # fused kernels: a conv/gemm takes its
    # elementwise neighbours with it in TensorRT and ORT's fusions, so the compute layers are the launches
    return {"flops": 2 * macs + other, "macs": macs, "kernels": kernels, "weight_elements": weight_elems,
            "activation_elements": act_elems, "io_elements": io_elems, "nodes_without_shape": unknown,
            "batch_size": batch_size}


def count_onnx(path: str | Path, batch_size: int = 1) -> dict[str, Any]:
    """FLOPs, weight and activation element counts of an ONNX model at `batch_size` (cached per file)."""
    p = Path(path)
    return dict(_count(str(p.resolve()), p.stat().st_mtime, batch_size))


def traffic_bytes(counts: dict[str, Any], precision: str) -> int:
    """DRAM bytes under the module's model: weights once, activations written and read once, inputs in fp32."""
    eb = ELEM_BYTES[precision]
    return counts["weight_elements"] * eb + 2 * counts["activation_elements"] * eb + counts["io_elements"] * 4


#: The floor every inference pays in a runtime whatever its arithmetic: (ms per inference, ms per fused kernel,
#: where the figure comes from). Without it a roofline gives a tiny model 0.0017 ms on a Jetson, which no
#: runtime reaches.
OVERHEAD: dict[str, tuple[float, float, str]] = {
    "tensorrt": (0.02, 0.002, "assumed, not calibrated on a device: ~20 us per inference (enqueueV3 and a stream "
                              "synchronise) and ~2 us per fused kernel (a GPU kernel launch)"),
    "onnxruntime": (0.004, 0.0008, "calibrated on this project's development host (AMD EPYC Zen 4, 2 threads): the "
                                   "smallest models' p50 there is ~0.013 ms for 7 compute layers; slower cores pay "
                                   "more, so on them this is a floor"),
    "executorch": (0.004, 0.0008, "taken as ONNX Runtime's (both dispatch one kernel per fused op on the CPU); not "
                                  "calibrated"),
}


def roofline(counts: dict[str, Any], precision: str, peak, runtime: str | None = None) -> dict[str, Any] | None:
    """Latency lower bound in ms for one batch against `peak` (a toolkit.devices.Peak), plus the runtime's
    per-inference and per-kernel overhead floor (OVERHEAD); None without figures."""
    compute, key = peak.compute_for(precision)
    if compute is None:
        return None
    nbytes = traffic_bytes(counts, precision)
    t_compute = counts["flops"] / compute
    t_memory = nbytes / (peak.memory_bandwidth_gbs * 1e9)
    per_call, per_kernel, source = OVERHEAD.get(runtime or "", (0.0, 0.0, "no overhead floor for this runtime"))
    overhead_ms = per_call + per_kernel * counts.get("kernels", 0)
    t = max(t_compute, t_memory)
    return {"latency_ms": t * 1e3 + overhead_ms, "flops": counts["flops"], "bytes": nbytes, "bound": "compute" if
            t_compute >= t_memory else "memory", "peak_used": key, "compute_ms": t_compute * 1e3,
            "memory_ms": t_memory * 1e3, "overhead_ms": overhead_ms, "overhead_source": source,
            "batch_size": counts["batch_size"]}


#: fp32 FLOP per cycle and core of one FMA pipe of the widest vector each ISA family has: a floor of the peak
#: (most server cores have two such pipes), so a device called slower than the host by it is slower.
FLOPS_PER_CYCLE = {"x86-amx": 32, "x86-avx512-vnni": 32, "x86-avx512": 32, "x86-avx-vnni": 16, "x86-avx2": 16,
                   "arm-dotprod": 8, "arm-neon": 8, "generic": 4}


def _clock_ghz(text: str) -> float | None:
    mhz = [float(v) for line in text.splitlines() if line.lower().startswith("cpu mhz")
           for v in [line.partition(":")[2].strip()] if v.replace(".", "", 1).isdigit()]
    if mhz:
        return min(mhz) / 1e3
    try:  # Arm kernels do not print a clock in /proc/cpuinfo
        return int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1e6
    except (OSError, ValueError):
        return None


def host_peak(threads: int | None = None, cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any] | None:
    """A lower bound of this host's fp32 peak (cores x clock x FLOP/cycle of one FMA pipe, FLOPS_PER_CYCLE), for
    one use: telling when a device's estimate beats what this faster host measured. None without a clock."""
    from exporters.int8_recipes import host_isa

    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    ghz = _clock_ghz(text)
    if not ghz:
        return None
    import os

    cores = threads or len(os.sched_getaffinity(0))
    isa = host_isa(cpuinfo)
    per = FLOPS_PER_CYCLE.get(isa, 4)
    return {"fp32_gflops": cores * ghz * per, "source": f"derived lower bound: {cores} cores x {ghz:.2f} GHz x {per} "
            f"fp32 FLOP/cycle ({isa}, one FMA pipe; /proc/cpuinfo)"}


def peak_for(device: dict[str, Any], precision: str) -> float | None:
    """A report's device entry's peak ops/s for `precision` (published peak, else the host's derived floor)."""
    from toolkit.devices import Peak

    if device.get("peak"):
        return Peak(**device["peak"]).compute_for(precision)[0]
    derived = device.get("derived_peak")
    return derived["fp32_gflops"] * 1e9 if derived else None
