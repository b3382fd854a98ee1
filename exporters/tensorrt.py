"""ONNX -> strongly typed TensorRT engine (TensorRT 10.x or 11.x) with the Python API, the equivalent `trtexec`
command line for the device's TensorRT version, and the key that says where an engine may run.

Precision lives in the ONNX file, not in builder flags: `tensorrt-fp16` is built from the float16 ONNX file
(`onnx-fp16`, with the ops the fp16 guard keeps in float32), `tensorrt-int8` from the QDQ `onnx-int8` file. The
network is strongly typed (`NetworkDefinitionCreationFlag.STRONGLY_TYPED`, which TensorRT 10 honours and 11 takes
as its only mode), so the same file builds the same engine precision on 10.x and 11.x; no precision flag and no
calibrator is ever set (TensorRT 11 removed BuilderFlag.FP16/INT8 and every IInt8*Calibrator).

Engines (and timing caches) are specific to the TensorRT version and the GPU: each engine's manifest entry carries
an `engine_key` (TensorRT version, GPU name, compute capability, the ONNX file's sha256, profile shapes, timing
cache hash, DLA core) and loading it anywhere else is refused with a message that says to rebuild.

Building needs TensorRT and a CUDA GPU, so it normally happens on the device (`edgespec bundle`, or trtexec
there). TensorRT cannot be installed on the development machines (its library wheels download from NVIDIA's
index at install time), so this module is tested against fake 10.x and 11.x modules; every TensorRT figure is
unverified until measured on a GPU (benchmarks/scripts/cuda_check.sh).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import EdgespecError, UserError

log = logging.getLogger(__name__)

#: TensorRT major versions edgespec builds with (10: JetPack 6/7 on Jetson; 11: the package index today).
SUPPORTED_MAJORS = (10, 11)
#: TensorRT 11 releases with DLA (per NVIDIA's 11.4.1 docs: Jetson AGX Orin on JetPack 7.2.2+; 11.0-11.4.0 none).
DLA_MIN_11 = (11, 4, 1)


def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for p in str(version).split("."):
        digits = "".join(c for c in p if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or (0,)


def check_version(version: str, where: str = "") -> int:
    """The major version when edgespec supports it, else a UserError naming the version found."""
    major = version_tuple(version)[0]
    if major not in SUPPORTED_MAJORS:
        raise UserError(f"edgespec builds engines with TensorRT {' or '.join(f'{m}.x' for m in SUPPORTED_MAJORS)}, "
                        f"found {version}" + (f"; {where}" if where else ""))
    return major


@dataclass(frozen=True)
class EngineSpec:
    onnx_path: Path
    engine_path: Path
    precision: str  # "fp16" | "int8": what the ONNX file's types say, checked before building
    input_name: str
    input_chw: tuple[int, int, int]
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 32
    workspace_mb: int = 1024
    timing_cache: Path | None = None
    dla_core: int | None = None  # a DLA core (Jetson AGX Orin has 0 and 1); None: the GPU
    gpu_fallback: bool = True  # with a DLA core: layers the DLA cannot run go to the GPU (else the build fails)

    def __post_init__(self) -> None:
        if self.precision not in ("fp16", "int8"):
            raise UserError(f"TensorRT precision must be fp16 or int8, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise UserError(f"TensorRT batch range needs 1 <= min <= opt <= max, got {self.min_batch}, "
                            f"{self.opt_batch}, {self.max_batch}")
        if self.dla_core is not None and self.dla_core < 0:
            raise UserError(f"dla_core must be a DLA core number >= 0, got {self.dla_core}")

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) input shapes of the optimization profile."""
        return tuple((b, *self.input_chw) for b in (self.min_batch, self.opt_batch, self.max_batch))  # type: ignore

    def profile(self) -> dict[str, list[int]]:
        lo, opt, hi = self.shapes()
        return {"min": list(lo), "opt": list(opt), "max": list(hi)}


@dataclass(frozen=True)
class Target:
    """Where an engine is built or loaded: what its key is compared against."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7" (Orin), "9.0" (H100/H200), ...


def local_target(trt: Any) -> Target:
    """This host's TensorRT version and CUDA GPU (through torch, which edgespec has anyway)."""
    import torch

    if not torch.cuda.is_available():
        raise UserError("TensorRT needs a CUDA GPU and this host has none; build the engine on the device with "
                        "`edgespec bundle` or trtexec")
    major, minor = torch.cuda.get_device_capability()
    return Target(str(trt.__version__), torch.cuda.get_device_name(), f"{major}.{minor}")


# -- trtexec ---------------------------------------------------------------------------------------------------

def trtexec_argv(spec: EngineSpec, tensorrt_major: int = 10) -> list[str]:
    """The same build as `build_engine`, for running trtexec on a device with TensorRT `tensorrt_major`.x.

    10.x: `--stronglyTyped` (precision from the ONNX types, as the API build); 11.x: no precision flag at all (11
    removed --fp16/--int8/--best/--calib/--layerPrecisions; strong typing is its only mode). `--noDataTransfers`
    is stated either way so trtexec's GPU latency means the same on both (11 changed the default)."""
    if tensorrt_major not in SUPPORTED_MAJORS:
        raise UserError(f"no trtexec command for TensorRT {tensorrt_major}.x; edgespec supports "
                        f"{', '.join(f'{m}.x' for m in SUPPORTED_MAJORS)}")

    def dims(shape: tuple[int, ...]) -> str:
        return f"{spec.input_name}:{'x'.join(str(d) for d in shape)}"

    lo, opt, hi = spec.shapes()
    argv = ["trtexec", f"--onnx={spec.onnx_path}", f"--saveEngine={spec.engine_path}", f"--minShapes={dims(lo)}",
            f"--optShapes={dims(opt)}", f"--maxShapes={dims(hi)}", f"--memPoolSize=workspace:{spec.workspace_mb}M"]
    if tensorrt_major == 10:
        argv.append("--stronglyTyped")
    argv.append("--noDataTransfers")
    if spec.dla_core is not None:
        argv.append(f"--useDLACore={spec.dla_core}")
        if spec.gpu_fallback:
            argv.append("--allowGPUFallback")
    if spec.timing_cache is not None:
        argv.append(f"--timingCacheFile={spec.timing_cache}")
    return argv


def trtexec_command(spec: EngineSpec, tensorrt_major: int = 10) -> str:
    return shlex.join(trtexec_argv(spec, tensorrt_major))


def trtexec_commands(spec: EngineSpec) -> dict[str, str]:
    """The command for each supported TensorRT major version, keyed "10", "11"."""
    return {str(m): trtexec_command(spec, m) for m in SUPPORTED_MAJORS}


# -- the ONNX file says the precision --------------------------------------------------------------------------

def onnx_precision(path: str | Path) -> str:
    """'int8' (Q/DQ nodes), 'fp16' (float16 tensors or casts) or 'fp32': what a strongly typed engine computes in."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in proto.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear"}:
        return "int8"
    f16 = onnx.TensorProto.FLOAT16
    if any(i.data_type == f16 for i in proto.graph.initializer) or any(
            a.name == "to" and a.i == f16 for n in proto.graph.node if n.op_type == "Cast" for a in n.attribute):
        return "fp16"
    return "fp32"


def _check_source(spec: EngineSpec) -> str:
    found = onnx_precision(spec.onnx_path)
    if found != spec.precision:
        source = {"fp16": "onnx-fp16", "int8": "onnx-int8"}[spec.precision]
        raise UserError(f"a strongly typed {spec.precision} engine needs a {spec.precision} ONNX file ({source}); "
                        f"{spec.onnx_path.name} is {found}: the engine would silently run in {found}")
    return found


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- timing cache, keyed like the engine -----------------------------------------------------------------------

def _cache_key_path(cache: Path) -> Path:
    return cache.with_name(cache.name + ".key.json")


def _cache_key(target: Target) -> dict[str, str]:
    return {"tensorrt_version": target.tensorrt_version, "gpu_name": target.gpu_name,
            "compute_capability": target.compute_capability}


def read_timing_cache(cache: Path | None, target: Target) -> tuple[bytes, dict[str, Any]]:
    """The cache's bytes when its key matches `target` (else empty: a stale cache is never fed to the builder)."""
    if cache is None:
        return b"", {"path": None}
    facts: dict[str, Any] = {"path": str(cache), "reused": False}
    if not cache.is_file():
        return b"", facts
    data = cache.read_bytes()
    key_path = _cache_key_path(cache)
    try:
        key = json.loads(key_path.read_text())
    except (OSError, ValueError):
        key = None
    want = _cache_key(target)
    if key is None or {k: key.get(k) for k in want} != want or key.get("sha256") != sha256_bytes(data):
        why = ("it has no key file" if key is None else "its key file does not match its bytes"
               if key.get("sha256") != sha256_bytes(data) else
               f"it was made by TensorRT {key.get('tensorrt_version')} on {key.get('gpu_name')} "
               f"(compute {key.get('compute_capability')})")
        log.warning("timing cache %s not reused: %s; this build starts a fresh one for TensorRT %s on %s",
                    cache, why, target.tensorrt_version, target.gpu_name)
        facts["stale"] = why
        return b"", facts
    facts["reused"] = True
    facts["sha256_in"] = key["sha256"]
    return data, facts


def write_timing_cache(cache: Path, data: bytes, target: Target) -> str:
    from toolkit.io import write_bytes, write_text

    digest = sha256_bytes(data)
    write_bytes(cache, data)
    write_text(_cache_key_path(cache), json.dumps({**_cache_key(target), "sha256": digest}, indent=1) + "\n")
    return digest


# -- build -----------------------------------------------------------------------------------------------------

def import_tensorrt(check_gpu: bool = True, hint: str = ""):
    """The tensorrt module (10.x or 11.x), or a UserError that says where to build instead."""
    where = ("build the engine on the device with `edgespec bundle` or trtexec" + (f" ({hint})" if hint else ""))
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError(f"TensorRT is not installed here (pip install -e '.[tensorrt]' on a host with an NVIDIA GPU); "
                        f"{where}") from None
    check_version(str(getattr(trt, "__version__", "0")), where)
    if check_gpu:
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"TensorRT needs a CUDA GPU and this host has none; {where}")
    return trt


def _network_flags(trt: Any, major: int) -> int:
    if major == 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0  # 11.x: strongly typed is the only mode (the flag is deprecated and ignored there)


def _configure_dla(trt: Any, builder: Any, config: Any, spec: EngineSpec, version: str) -> None:
    if spec.dla_core is None:
        return
    v = version_tuple(version)
    if v[0] == 11 and v < DLA_MIN_11:
        raise UserError(f"TensorRT {version} has no DLA support (NVIDIA documents DLA again from 11.4.1 on JetPack "
                        "7.2.2); build for the GPU (drop dla_core) or use TensorRT 10 (JetPack 6)")
    cores = int(builder.num_DLA_cores)
    if spec.dla_core >= cores:
        raise UserError(f"dla_core {spec.dla_core} asked for, but this device has {cores} DLA core(s)")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = spec.dla_core
    if spec.gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def engine_key(spec: EngineSpec, target: Target, onnx_sha256: str, timing_cache_sha256: str | None
               ) -> dict[str, Any]:
    """What an engine is bound to; loading compares it with the loading host's `Target`."""
    return {**asdict(target), "tensorrt_major": version_tuple(target.tensorrt_version)[0],
            "onnx_sha256": onnx_sha256, "precision": spec.precision, "strongly_typed": True,
            "profile": spec.profile(), "timing_cache_sha256": timing_cache_sha256,
            "device": "dla" if spec.dla_core is not None else "gpu", "dla_core": spec.dla_core,
            "gpu_fallback": spec.gpu_fallback if spec.dla_core is not None else None}


def build_engine(spec: EngineSpec, trt: Any = None, target: Target | None = None) -> dict[str, Any]:
    """Parse the ONNX file into a strongly typed network, configure the builder (profile, workspace, timing cache,
    DLA), serialize; returns the build details with the engine's `engine_key`."""
    from toolkit.io import write_bytes

    trt = trt or import_tensorrt()
    version = str(trt.__version__)
    major = check_version(version, "build the engine on a host with TensorRT 10.x or 11.x")
    target = target or local_target(trt)
    _check_source(spec)
    onnx_sha = sha256_bytes(spec.onnx_path.read_bytes())
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, major))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(spec.onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgespecError(f"TensorRT could not parse {spec.onnx_path.name}: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mb << 20)
    _configure_dla(trt, builder, config, spec, version)
    profile = builder.create_optimization_profile()
    lo, opt, hi = spec.shapes()
    profile.set_shape(spec.input_name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache_bytes, cache_facts = read_timing_cache(spec.timing_cache, target)
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgespecError(f"TensorRT failed to build an engine from {spec.onnx_path.name} (see the log above)")
    write_bytes(spec.engine_path, bytes(memoryview(serialized)))
    cache_sha = None
    if spec.timing_cache is not None:
        cache_sha = write_timing_cache(spec.timing_cache, bytes(memoryview(config.get_timing_cache().serialize())),
                                       target)
        cache_facts["sha256"] = cache_sha
    key = engine_key(spec, target, onnx_sha, cache_sha)
    return {"tensorrt_version": version, "tensorrt_major": major, "strongly_typed": True, "precision_flags": [],
            "precision_from": f"{spec.onnx_path.name} ({spec.precision} types)", "profile": spec.profile(),
            "workspace_mb": spec.workspace_mb, "timing_cache": cache_facts, "engine_key": key,
            "figures": "unverified: no TensorRT on the host that wrote this code; measured only where a GPU ran it"}


# -- load ------------------------------------------------------------------------------------------------------

def check_engine_key(key: dict[str, Any] | None, target: Target, what: str = "this engine") -> None:
    """Refuse an engine built for another TensorRT version or compute capability (it may load and be wrong)."""
    if not key:
        raise UserError(f"{what} has no engine key (built by an older edgespec): rebuild it on this device with "
                        "`edgespec export` or `edgespec bundle`")
    problems = []
    if key.get("tensorrt_version") != target.tensorrt_version:
        problems.append(f"TensorRT {key.get('tensorrt_version')} (this host: {target.tensorrt_version})")
    if key.get("compute_capability") != target.compute_capability:
        problems.append(f"compute capability {key.get('compute_capability')} (this host's "
                        f"{target.gpu_name}: {target.compute_capability})")
    if problems:
        raise UserError(f"{what} was built for {' and '.join(problems)}: rebuild it on this device (edgespec export "
                        f"or the manifest's trtexec line); it is never run elsewhere")
    if key.get("gpu_name") != target.gpu_name:
        log.warning("%s was built on %s, this host has %s (same compute capability %s): loading it", what,
                    key.get("gpu_name"), target.gpu_name, target.compute_capability)


def load_engine(path: str | Path, key: dict[str, Any] | None, trt: Any = None, target: Target | None = None):
    """A deserialized engine, after its key is checked against this host."""
    trt = trt or import_tensorrt()
    check_version(str(trt.__version__))
    target = target or local_target(trt)
    check_engine_key(key, target, f"engine {Path(path).name}")
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(path).read_bytes())
    if engine is None:
        raise EdgespecError(f"TensorRT could not load {path} although its key matches this host; rebuild it")
    return engine


def run_engine(engine_path: str | Path, images: np.ndarray, input_name: str, output_name: str,
               max_batch: int, key: dict[str, Any] | None = None) -> np.ndarray:
    """Logits of a serialized engine on `images` (float32 NCHW), in chunks of at most `max_batch`, on CUDA."""
    import torch

    trt = import_tensorrt()
    engine = load_engine(engine_path, key, trt)
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
