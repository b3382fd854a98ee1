"""ONNX -> TensorRT 10 engine with the Python API, and the equivalent `trtexec` command line.

Engines are specific to the GPU and TensorRT version that built them, so they are normally built on the target
device (`edgespec bundle`, or trtexec there); building here needs TensorRT 10 and a CUDA GPU on this host.
int8 comes from the Q/DQ nodes of the `onnx-int8` model (explicit quantization), never from a TensorRT calibrator.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import EdgespecError, UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSpec:
    onnx_path: Path
    engine_path: Path
    precision: str  # "fp16" | "int8"
    input_name: str
    input_chw: tuple[int, int, int]
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 32
    workspace_mb: int = 1024
    timing_cache: Path | None = None

    def __post_init__(self) -> None:
        if self.precision not in ("fp16", "int8"):
            raise UserError(f"TensorRT precision must be fp16 or int8, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise UserError(f"TensorRT batch range needs 1 <= min <= opt <= max, got {self.min_batch}, "
                            f"{self.opt_batch}, {self.max_batch}")

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) input shapes of the optimization profile."""
        return tuple((b, *self.input_chw) for b in (self.min_batch, self.opt_batch, self.max_batch))  # type: ignore


def trtexec_argv(spec: EngineSpec) -> list[str]:
    """The same build as `build_engine`, for running trtexec on the device."""

    def dims(shape: tuple[int, ...]) -> str:
        return f"{spec.input_name}:{'x'.join(str(d) for d in shape)}"

    lo, opt, hi = spec.shapes()
    argv = ["trtexec", f"--onnx={spec.onnx_path}", f"--saveEngine={spec.engine_path}", f"--minShapes={dims(lo)}",
            f"--optShapes={dims(opt)}", f"--maxShapes={dims(hi)}", f"--memPoolSize=workspace:{spec.workspace_mb}M",
            "--fp16"]
    if spec.precision == "int8":
        argv.append("--int8")
    if spec.timing_cache is not None:
        argv.append(f"--timingCacheFile={spec.timing_cache}")
    return argv


def trtexec_command(spec: EngineSpec) -> str:
    return shlex.join(trtexec_argv(spec))


def import_tensorrt(check_gpu: bool = True, hint: str = ""):
    """The tensorrt module, or a UserError that says where to build instead."""
    where = ("build the engine on the device with `edgespec bundle` or trtexec" + (f" ({hint})" if hint else ""))
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError(f"TensorRT is not installed here (pip install -e '.[tensorrt]' on a host with an NVIDIA GPU); "
                        f"{where}") from None
    version = str(getattr(trt, "__version__", "0"))
    if not version.split(".")[0] == "10":
        raise UserError(f"edgespec builds engines with TensorRT 10, found {version}; {where}")
    if check_gpu:
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"TensorRT needs a CUDA GPU and this host has none; {where}")
    return trt


def build_engine(spec: EngineSpec, trt: Any = None) -> dict[str, Any]:
    """Parse the ONNX file, configure the builder (profile, workspace, timing cache, precision), serialize."""
    from toolkit.io import write_bytes

    trt = trt or import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(spec.onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgespecError(f"TensorRT could not parse {spec.onnx_path.name}: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mb << 20)
    # fp16 for every layer the Q/DQ nodes leave unquantized, as `trtexec --int8 --fp16` does
    config.set_flag(trt.BuilderFlag.FP16)
    if spec.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    lo, opt, hi = spec.shapes()
    profile.set_shape(spec.input_name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache_bytes = spec.timing_cache.read_bytes() if spec.timing_cache and spec.timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgespecError(f"TensorRT failed to build an engine from {spec.onnx_path.name} (see the log above)")
    write_bytes(spec.engine_path, bytes(memoryview(serialized)))
    if spec.timing_cache is not None:
        write_bytes(spec.timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return {"tensorrt_version": str(trt.__version__), "profile": {"min": list(lo), "opt": list(opt), "max": list(hi)},
            "workspace_mb": spec.workspace_mb, "flags": ["FP16"] + (["INT8"] if spec.precision == "int8" else []),
            "timing_cache": str(spec.timing_cache) if spec.timing_cache else None}


def run_engine(engine_path: str | Path, images: np.ndarray, input_name: str, output_name: str,
               max_batch: int) -> np.ndarray:
    """Logits of a serialized engine on `images` (float32 NCHW), in chunks of at most `max_batch`, on CUDA."""
    import torch

    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise EdgespecError(f"TensorRT could not load {engine_path}; it was built for another GPU or TensorRT")
    context = engine.create_execution_context()
    stream = torch.cuda.current_stream()
    outs = []
    for start in range(0, len(images), max_batch):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + max_batch])).cuda()
        context.set_input_shape(input_name, tuple(x.shape))
        y = torch.empty(tuple(context.get_tensor_shape(output_name)), dtype=torch.float32, device="cuda")
        context.set_tensor_address(input_name, x.data_ptr())
        context.set_tensor_address(output_name, y.data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise EdgespecError(f"TensorRT execution of {engine_path} failed")
        stream.synchronize()
        outs.append(y.cpu().numpy())
    return np.concatenate(outs)
