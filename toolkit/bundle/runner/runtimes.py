"""Runtimes for the on-device runner: ONNX Runtime, and TensorRT (10.x or 11.x, strongly typed: precision from
the bundled ONNX file's types) with the engine built on the device.

Standard library + numpy + onnxruntime, or TensorRT's Python bindings with cuda-python or pycuda: no torch,
no edgespec. The interface and what is timed mirror benchmarks/runtimes.py: inputs are preprocessed float32
NCHW batches; GPU runners include the host-to-device copy of the input and the copy of the logits back.
Python 3.8 compatible (JetPack 5 ships it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time

import numpy as np


class RunnerError(Exception):
    """The device cannot run this artifact as asked; the message says what to do."""


class OrtRunner:
    """ONNX Runtime session, configured exactly like benchmarks.runtimes.OrtRunner; loaded from verified bytes."""

    name = "onnxruntime"

    def __init__(self, model_bytes, threads, providers):
        import onnxruntime as ort

        available = ort.get_available_providers()
        chosen = [p for p in providers if p in available]
        if not chosen:
            raise RunnerError(f"none of the execution providers {providers} is available in this onnxruntime "
                              f"(available: {', '.join(available)})")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        # no spin-waiting between calls: a session whose threads spin after its call slows the next session timed
        # beside it (measured: two sessions of one model, paired, 0.60x with spinning, 1.00x [0.98-1.02] without)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(model_bytes, sess_options=opts, providers=chosen)
        self.providers = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        self.dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        self.version = ort.__version__
        self.build = None

    def run(self, x):
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        return self.session.run([self.output_name], {self.input_name: x})[0]


# -- TensorRT ------------------------------------------------------------------------------------------------

def find_trtexec():
    for cand in (shutil.which("trtexec"), "/usr/src/tensorrt/bin/trtexec"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def gpu_name():
    """The GPU's name: nvidia-smi on discrete GPUs, the device-tree model on Jetson (integrated GPU)."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20).stdout.strip().splitlines()
            if out and out[0].strip():
                return out[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        with open("/proc/device-tree/model", "rb") as fh:
            return fh.read().rstrip(b"\0").decode("utf-8", "replace") + " (integrated GPU)"
    except OSError:
        return "unknown GPU"


def compute_capability():
    """'8.7'-style compute capability from nvidia-smi (discrete GPUs, recent JetPack), Orin's 8.7 from its model
    name, else 'unknown' (then the GPU name alone keys the cache)."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20).stdout.strip().splitlines()
            if out and re.match(r"^\d+\.\d+$", out[0].strip()):
                return out[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return "8.7" if "Orin" in gpu_name() else "unknown"


def engine_key(onnx_sha, precision, shapes, trt_version, gpu, cc=None, dla=None):
    """Engines are specific to the TensorRT version and the GPU: the cache key includes both (and the compute
    capability and DLA core when known)."""
    parts = [onnx_sha, precision, shapes, trt_version, gpu]
    if cc is not None or dla is not None:
        parts += [cc, dla]
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


SUPPORTED_MAJORS = (10, 11)


def trt_major(version):
    """10 from '10.3.0'; trtexec's banner writes 'v100300' (major * 10000 + minor * 100 + patch)."""
    digits = re.match(r"^(\d+)", str(version))
    if not digits:
        return None
    n = int(digits.group(1))
    return n // 10000 if n >= 10000 else n


def check_major(version):
    major = trt_major(version)
    if major not in SUPPORTED_MAJORS:
        raise RunnerError(f"this device has TensorRT {version}; the bundle builds engines with TensorRT 10.x or "
                          "11.x (strongly typed): install one of those, or bundle for an onnxruntime profile")
    return major


def trtexec_flags(major, dla_core=None, gpu_fallback=True):
    """Precision comes from the ONNX file's types on both: 10.x `--stronglyTyped`, 11.x no precision flag (it
    removed --fp16/--int8); `--noDataTransfers` stated either way. Mirrors exporters.tensorrt.trtexec_argv."""
    flags = (["--stronglyTyped"] if major == 10 else []) + ["--noDataTransfers"]
    if dla_core is not None:
        flags.append(f"--useDLACore={dla_core}")
        if gpu_fallback:
            flags.append("--allowGPUFallback")
    return flags


def _shapes(item, max_batch):
    c, h, w = item["input_shape"][1:]
    fixed = item["input_shape"][0]
    if isinstance(fixed, int) and fixed > 0:
        return {"min": [fixed, c, h, w], "opt": [fixed, c, h, w], "max": [fixed, c, h, w]}
    return {"min": [1, c, h, w], "opt": [max_batch, c, h, w], "max": [max_batch, c, h, w]}


def build_engine_api(onnx_bytes, item, precision, shapes, dla_core=None, gpu_fallback=True):
    """Build a serialized strongly typed engine with the TensorRT 10.x/11.x Python API; returns bytes. The ONNX
    file's types are the precision (fp16 file, QDQ int8 file): no precision flag, no calibrator."""
    import tensorrt as trt

    major = check_major(trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # 10.x: ask for strong typing; 11.x: the only mode (its flag is deprecated and ignored)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if major == 10 else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RunnerError(f"TensorRT could not parse {item['path']}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        if gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    profile = builder.create_optimization_profile()
    profile.set_shape(item["input_name"], shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RunnerError(f"TensorRT failed to build an engine from {item['path']}; see its log above")
    return bytes(engine)


def trtexec_build_argv(trtexec, onnx_path, engine_path, item, shapes, major, dla_core=None, gpu_fallback=True):
    dims = {k: "x".join(str(d) for d in v) for k, v in shapes.items()}
    name = item["input_name"]
    return ([trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine_path}", "--skipInference",
             f"--minShapes={name}:{dims['min']}", f"--optShapes={name}:{dims['opt']}",
             f"--maxShapes={name}:{dims['max']}"] + trtexec_flags(major, dla_core, gpu_fallback))


def build_engine_trtexec(trtexec, onnx_path, engine_path, item, precision, shapes, major, dla_core=None,
                         gpu_fallback=True):
    cmd = trtexec_build_argv(trtexec, onnx_path, engine_path, item, shapes, major, dla_core, gpu_fallback)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.isfile(engine_path):
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        raise RunnerError(f"trtexec failed to build {item['path']}: {' | '.join(tail)}")
    return cmd


def trt_version_and_builder():
    """('api', version) with the Python bindings, ('trtexec', version) with only trtexec, or raises."""
    try:
        import tensorrt as trt

        return "api", trt.__version__
    except ImportError:
        pass
    trtexec = find_trtexec()
    if trtexec is None:
        raise RunnerError("this device has neither TensorRT's Python bindings nor trtexec; install TensorRT "
                          "(JetPack ships both) or bundle for an onnxruntime profile")
    out = subprocess.run([trtexec, "--help"], capture_output=True, text=True)
    m = re.search(r"TensorRT\.trtexec \[TensorRT v(\d+)\]", out.stdout + out.stderr)
    if not m:
        return "trtexec", "unknown"
    n = int(m.group(1))  # v100300 -> 10.3.0
    return "trtexec", (f"{n // 10000}.{n // 100 % 100}.{n % 100}" if n >= 10000 else str(n))


def engine_for(onnx_path, onnx_bytes, item, precision, max_batch, cache_dir, dla_core=None, gpu_fallback=True):
    """A cached or freshly built engine: (path, build facts). The facts report the device's TensorRT version and
    the trtexec command for that version (what `edgespec bench --import` records)."""
    how, version = trt_version_and_builder()
    major = check_major(version)
    gpu = gpu_name()
    cc = compute_capability()
    shapes = _shapes(item, max_batch)
    key = engine_key(item["sha256"], precision, shapes, version, gpu, cc, dla_core)
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"{key}.engine")
    argv = trtexec_build_argv("trtexec", os.path.basename(onnx_path), f"{key}.engine", item, shapes, major,
                              dla_core, gpu_fallback)
    facts = {"tensorrt_version": version, "tensorrt_major": major, "gpu": gpu, "compute_capability": cc,
             "builder": how, "engine_cache": path, "cached": True, "build_s": None, "shapes": shapes,
             "strongly_typed": True, "dla_core": dla_core, "trtexec": " ".join(argv)}
    if os.path.isfile(path):
        return path, facts
    tmp = path + f".{os.getpid()}.tmp"
    t0 = time.perf_counter()
    if how == "api":
        with open(tmp, "wb") as fh:
            fh.write(build_engine_api(onnx_bytes, item, precision, shapes, dla_core, gpu_fallback))
    else:
        build_engine_trtexec(find_trtexec(), onnx_path, tmp, item, precision, shapes, major, dla_core, gpu_fallback)
    facts["build_s"] = time.perf_counter() - t0
    facts["cached"] = False
    os.replace(tmp, path)
    return path, facts


class _Cuda:
    """Device buffers and one stream through cuda-python (cudart) or pycuda, whichever the device has."""

    def __init__(self):
        try:
            try:
                from cuda.bindings import runtime as cudart
            except ImportError:
                from cuda import cudart
            self.rt, self.kind = cudart, "cuda-python"
            self.stream = self._ok(cudart.cudaStreamCreate())
        except ImportError:
            try:
                import pycuda.autoinit  # noqa: F401
                import pycuda.driver as drv
            except ImportError:
                raise RunnerError("TensorRT inference needs cuda-python or pycuda; pip install cuda-python") from None
            self.rt, self.kind = drv, "pycuda"
            self.stream = drv.Stream()

    def _ok(self, res):
        err = res[0]
        if int(err) != 0:
            raise RunnerError(f"CUDA call failed: {err}")
        return res[1] if len(res) > 1 else None

    def alloc(self, nbytes):
        if self.kind == "pycuda":
            return self.rt.mem_alloc(nbytes)
        return self._ok(self.rt.cudaMalloc(nbytes))

    def ptr(self, buf):
        return int(buf)

    def stream_handle(self):
        return self.stream.handle if self.kind == "pycuda" else int(self.stream)

    def h2d(self, dst, arr):
        if self.kind == "pycuda":
            self.rt.memcpy_htod_async(dst, arr, self.stream)
        else:
            self._ok(self.rt.cudaMemcpyAsync(dst, arr.ctypes.data, arr.nbytes,
                                             self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def d2h(self, arr, src):
        if self.kind == "pycuda":
            self.rt.memcpy_dtoh_async(arr, src, self.stream)
        else:
            self._ok(self.rt.cudaMemcpyAsync(arr.ctypes.data, src, arr.nbytes,
                                             self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    def sync(self):
        if self.kind == "pycuda":
            self.stream.synchronize()
        else:
            self._ok(self.rt.cudaStreamSynchronize(self.stream))


class TrtRunner:
    """A TensorRT engine built (or taken from the cache) on this device from the bundle's ONNX file."""

    name = "tensorrt"

    def __init__(self, onnx_path, onnx_bytes, item, precision, max_batch, cache_dir, dla_core=None,
                 gpu_fallback=True):
        path, self.build = engine_for(onnx_path, onnx_bytes, item, precision, max_batch, cache_dir, dla_core,
                                      gpu_fallback)
        try:
            import tensorrt as trt
        except ImportError:
            raise RunnerError(f"trtexec built the engine ({self.build['build_s'] or 0:.1f} s, cached at {path}) but "
                              "running it here needs TensorRT's Python bindings (python3-libnvinfer)") from None
        logger = trt.Logger(trt.Logger.WARNING)
        with open(path, "rb") as fh:
            self.engine = trt.Runtime(logger).deserialize_cuda_engine(fh.read())
        if self.engine is None:
            raise RunnerError(f"TensorRT could not load the cached engine {path}; delete it to rebuild")
        self.context = self.engine.create_execution_context()
        self.input_name, self.output_name = item["input_name"], item["output_name"]
        shape = self.engine.get_tensor_shape(self.input_name)
        self.fixed_batch = shape[0] if shape[0] > 0 else None
        self.max_batch = self.fixed_batch or self.engine.get_tensor_profile_shape(self.input_name, 0)[2][0]
        half = self.engine.get_tensor_dtype(self.input_name) == trt.DataType.HALF
        self.in_dtype = np.float16 if half else np.float32
        self.cuda = _Cuda()
        per_image_in = int(np.prod(item["input_shape"][1:])) * np.dtype(self.in_dtype).itemsize
        self.d_in = self.cuda.alloc(per_image_in * self.max_batch)
        self.d_out = self.cuda.alloc(len(item["classes"]) * 4 * self.max_batch)
        self.version = trt.__version__
        self.providers = [f"TensorRT {trt.__version__} via {self.cuda.kind}"]

    def run(self, x):
        if x.shape[0] > self.max_batch:
            raise RunnerError(f"batch {x.shape[0]} exceeds the engine's maximum batch {self.max_batch}")
        x = np.ascontiguousarray(x, dtype=self.in_dtype)
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        out = np.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=np.float32)
        self.context.set_tensor_address(self.input_name, self.cuda.ptr(self.d_in))
        self.context.set_tensor_address(self.output_name, self.cuda.ptr(self.d_out))
        self.cuda.h2d(self.d_in, x)
        self.context.execute_async_v3(self.cuda.stream_handle())
        self.cuda.d2h(out, self.d_out)
        self.cuda.sync()  # the time covers the whole inference, copies included
        return out
