"""Runtimes behind one small interface: load a model, run a float32 NCHW batch, get float32 logits.

Every runner takes inputs that are already preprocessed (normalised float32 NCHW), so what is timed is the
runtime's inference call alone, identically for ONNX Runtime, PyTorch and TensorRT. GPU runners include the
host-to-device copy of the input and the copy of the logits back, because a deployed model pays for both, and
synchronise before returning. GPU runners also offer `phases()`: H2D, compute and D2H timed separately with CUDA
events, optionally through a CUDA graph (benchmarks/gpu_timing.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from toolkit.errors import UserError

log = logging.getLogger(__name__)


class Runner(Protocol):
    name: str
    fixed_batch: int | None  # the only batch size the model accepts, or None when the batch is dynamic

    def run(self, x: np.ndarray) -> np.ndarray: ...


class OrtRunner:
    """ONNX Runtime session (ONNX or ORT format) with the profile's threads and execution providers."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int, providers: list[str]):
        import onnxruntime as ort

        available = ort.get_available_providers()
        chosen = [p for p in providers if p in available]
        if not chosen:
            raise UserError(f"none of the execution providers {providers} is available in this onnxruntime "
                            f"(available: {', '.join(available)})")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        # no spin-waiting between calls: a session whose threads spin after its call slows the next session timed
        # beside it (measured: two sessions of one model, paired, 0.60x with spinning, 1.00x [0.98-1.02] without)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=chosen)
        self.providers = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        self.dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None

    def run(self, x: np.ndarray) -> np.ndarray:
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        return self.session.run([self.output_name], {self.input_name: x})[0]


class TorchRunner:
    """The run's PyTorch checkpoint in eval mode under inference_mode (the `pytorch` format)."""

    name = "pytorch"
    fixed_batch = None

    def __init__(self, run_dir: str | Path, threads: int, device: str = "cpu"):
        import torch

        from toolkit.runs import Run

        torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device(device)
        self.model = Run.open(run_dir).model().to(self.device).eval()

    def run(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device))
            result = out.float().cpu().numpy()
            if self.device.type == "cuda":  # explicit: the timed call ends when the GPU has finished
                torch.cuda.synchronize(self.device)
            return result

    def phases(self, x: np.ndarray, runs: int = 200, warmup: int = 10, cuda_graph: bool = False) -> dict:
        """H2D, forward and D2H timed with CUDA events (benchmarks.gpu_timing); CUDA only."""
        from .gpu_timing import time_phases

        torch = self.torch
        if self.device.type != "cuda":
            raise UserError("GPU phase timing needs the model on a CUDA device")
        stream = torch.cuda.Stream()
        host_in = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).pin_memory()
        dev_in = torch.empty_like(host_in, device=self.device)
        with torch.inference_mode(), torch.cuda.stream(stream):
            out = {"y": self.model(dev_in.copy_(host_in))}
            host_out = torch.empty(tuple(out["y"].shape), dtype=out["y"].dtype).pin_memory()

            def forward() -> None:
                out["y"] = self.model(dev_in)

            return time_phases(lambda: dev_in.copy_(host_in, non_blocking=True), forward,
                               lambda: host_out.copy_(out["y"], non_blocking=True), stream, runs, warmup,
                               cuda_graph=cuda_graph)


def tensorrt_available() -> tuple[bool, str]:
    """TensorRT 10.x or 11.x importable and a CUDA GPU visible (through torch, which edgespec has anyway)."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, "the tensorrt Python package is not installed (pip install 'edgespec[tensorrt]')"
    from exporters.tensorrt import check_version

    try:
        check_version(str(getattr(trt, "__version__", "0")))
    except UserError as exc:
        return False, str(exc)
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible"
    return True, ""


class TrtRunner:
    """A serialized TensorRT 10.x/11.x engine, executed with torch-allocated CUDA buffers on one stream.

    The engine's key (its manifest entry's `engine_key`) is checked against this host first: an engine built for
    another TensorRT version or compute capability is refused with a message to rebuild, never run."""

    name = "tensorrt"

    def __init__(self, path: str | Path, engine_key: dict | None = None, trt=None, target=None):
        import torch

        from exporters.tensorrt import import_tensorrt, load_engine

        trt = trt or import_tensorrt()
        self.torch, self.trt = torch, trt
        self.engine = load_engine(path, engine_key, trt, target)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        shape = self.engine.get_tensor_shape(self.input_name)
        self.fixed_batch = shape[0] if shape[0] > 0 else None
        self.max_batch = self.fixed_batch
        if self.fixed_batch is None:
            self.max_batch = self.engine.get_tensor_profile_shape(self.input_name, 0)[2][0]
        self.in_dtype = torch.float16 if self.engine.get_tensor_dtype(self.input_name) == trt.DataType.HALF \
            else torch.float32
        self.stream = torch.cuda.Stream()

    def run(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        if x.shape[0] > self.max_batch:
            raise UserError(f"batch {x.shape[0]} exceeds the engine's maximum batch {self.max_batch}")
        with torch.cuda.stream(self.stream):
            xin = torch.from_numpy(np.ascontiguousarray(x)).to("cuda", non_blocking=False).to(self.in_dtype)
            self.context.set_input_shape(self.input_name, tuple(xin.shape))
            out_shape = tuple(self.context.get_tensor_shape(self.output_name))
            out = torch.empty(out_shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(self.input_name, xin.data_ptr())
            self.context.set_tensor_address(self.output_name, out.data_ptr())
            self.context.execute_async_v3(self.stream.cuda_stream)
            result = out.cpu().numpy()
            self.stream.synchronize()  # explicit: the time covers the whole inference, copies included
        return result

    def phases(self, x: np.ndarray, runs: int = 200, warmup: int = 10, cuda_graph: bool = False) -> dict:
        """H2D, execute_async_v3 and D2H timed with CUDA events, like trtexec (benchmarks.gpu_timing)."""
        from .gpu_timing import time_phases

        torch = self.torch
        host_in = torch.from_numpy(np.ascontiguousarray(x)).to(self.in_dtype).pin_memory()
        dev_in = torch.empty_like(host_in, device="cuda")
        self.context.set_input_shape(self.input_name, tuple(dev_in.shape))
        dev_out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32,
                              device="cuda")
        host_out = torch.empty_like(dev_out, device="cpu").pin_memory()
        self.context.set_tensor_address(self.input_name, dev_in.data_ptr())
        self.context.set_tensor_address(self.output_name, dev_out.data_ptr())
        with torch.cuda.stream(self.stream):
            return time_phases(lambda: dev_in.copy_(host_in, non_blocking=True),
                               lambda: self.context.execute_async_v3(self.stream.cuda_stream),
                               lambda: host_out.copy_(dev_out, non_blocking=True), self.stream, runs, warmup,
                               cuda_graph=cuda_graph)


class ExecuTorchRunner:
    """An ExecuTorch .pte through `executorch.runtime` (the C++ runtime's Python binding), XNNPACK's thread pool
    sized to the profile's threads. The program's batch is fixed (exporters/executorch.py)."""

    name = "executorch"

    def __init__(self, path: str | Path, threads: int):
        from exporters.executorch import PteProgram, require_executorch

        require_executorch()
        self.program = PteProgram(path, threads)
        self.fixed_batch = self.program.fixed_batch

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.program.run(x)


def ort_providers_available(providers: list[str]) -> tuple[bool, str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = [p for p in providers if p != "CPUExecutionProvider"]
    missing = [p for p in wanted if p not in available]
    if missing:
        return False, f"onnxruntime here lacks {', '.join(missing)} (has {', '.join(available)})"
    return True, ""


def make_runner(fmt: str, path: Path | None, run_dir: str | Path | None, threads: int, providers: list[str],
                cuda: bool = False, engine_key: dict | None = None) -> Runner:
    """The runner for an artifact of format `fmt` (path) or, for `pytorch`, the run's checkpoint."""
    if fmt == "pytorch":
        if run_dir is None:
            raise UserError("the pytorch format needs the run directory the manifest records")
        return TorchRunner(run_dir, threads, "cuda" if cuda else "cpu")
    if path is None:
        raise UserError(f"no artifact file for format {fmt}")
    from exporters.formats import FORMATS

    runtime = FORMATS[fmt].runtime if fmt in FORMATS else None
    if runtime == "tensorrt":
        return TrtRunner(path, engine_key)
    if runtime == "executorch":
        return ExecuTorchRunner(path, threads)
    return OrtRunner(path, threads, providers)
