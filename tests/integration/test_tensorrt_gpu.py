"""On a machine with an NVIDIA GPU (and, for the `tensorrt` tests, TensorRT 10.x or 11.x): the real paths the unit
tests drive through fake `tensorrt` modules. Run by benchmarks/scripts/cuda_check.sh; skipped elsewhere.

Never run on the machines this code was written on (no GPU, and TensorRT's library wheels download from NVIDIA's
index at install time): until cuda_check.sh has run them, every TensorRT figure edgespec reports is unverified.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
trt_here = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None or not torch.cuda.is_available(),
                              reason="needs TensorRT 10.x/11.x and a CUDA GPU")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_host_gpu_pytorch_phases_are_synchronised_and_split(digits_run, cuda_graph):
    from benchmarks.runtimes import TorchRunner

    runner = TorchRunner(digits_run, threads=1, device="cuda")
    x = np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32)
    res = runner.phases(x, runs=50, warmup=5, cuda_graph=cuda_graph)
    assert res["runs"] == 50 and res["cuda_graph"] == cuda_graph
    for phase in ("h2d_ms", "compute_ms", "d2h_ms"):
        assert 0 < res[phase]["p50"] <= res[phase]["p99"]
    # end to end (host, after synchronisation) covers the three GPU phases
    parts = res["h2d_ms"]["p50"] + res["compute_ms"]["p50"] + res["d2h_ms"]["p50"]
    assert res["end_to_end_ms"]["p50"] >= 0.8 * parts
    assert runner.run(x).shape == (8, 10)


@pytest.mark.tensorrt
@pytest.mark.gpu
@trt_here
def test_real_engines_are_strongly_typed_keyed_and_refused_elsewhere(digits_run, tmp_path):
    import tensorrt as trt

    from benchmarks.runtimes import TrtRunner
    from exporters import export_run
    from exporters import tensorrt as T
    from toolkit.errors import UserError

    entries = {e["format"]: e for e in export_run(digits_run, "tensorrt-fp16,tensorrt-int8", tmp_path / "out",
                                                   calib_count=64)}
    here = T.local_target(trt)
    for fmt in ("tensorrt-fp16", "tensorrt-int8"):
        e = entries[fmt]
        assert e["parity"]["passed"] and e["engine_key"]["tensorrt_version"] == trt.__version__
        assert e["engine_key"]["compute_capability"] == here.compute_capability
        assert ("--stronglyTyped" in e["trtexec"]) == (T.version_tuple(trt.__version__)[0] == 10)
        runner = TrtRunner(tmp_path / "out" / e["path"], e["engine_key"])
        x = np.zeros((4, 1, 8, 8), np.float32)
        assert runner.run(x).shape == (4, 10)
        for graph in (False, True):
            res = runner.phases(x, runs=50, warmup=5, cuda_graph=graph)
            assert res["compute_ms"]["p50"] > 0 and res["runs"] == 50
        with pytest.raises(UserError, match="rebuild"):
            TrtRunner(tmp_path / "out" / e["path"], {**e["engine_key"], "compute_capability": "1.0"})


@pytest.mark.tensorrt
@pytest.mark.gpu
@trt_here
def test_guarded_fp16_engine_holds_parity_where_plain_fp16_overflows(tmp_path):
    """The fp16 guard on a real strongly typed engine: the overflow model of tests/unit/test_fp16_guard.py."""
    import importlib.util as iu
    from pathlib import Path

    from exporters import tensorrt as T
    from exporters.fp16 import convert_fp16

    spec = iu.spec_from_file_location("guard_t", Path(__file__).parents[1] / "unit" / "test_fp16_guard.py")
    g = iu.module_from_spec(spec)
    spec.loader.exec_module(g)
    torch.manual_seed(0)
    model = g.Overflows().eval()
    calib = torch.randn(32, 1, 8, 8) * 3
    test = torch.randn(64, 1, 8, 8) * 3
    g._export(model, tmp_path / "m.onnx", calib)
    convert_fp16(tmp_path / "m.onnx", tmp_path / "plain.onnx")
    convert_fp16(tmp_path / "m.onnx", tmp_path / "guarded.onnx", guard_images=calib.numpy())
    with torch.no_grad():
        ref = model(test).numpy()
    diffs = {}
    for name in ("plain", "guarded"):
        es = T.EngineSpec(tmp_path / f"{name}.onnx", tmp_path / f"{name}.engine", "fp16", "input", (1, 8, 8),
                          max_batch=64)
        key = T.build_engine(es)["engine_key"]
        out = T.run_engine(es.engine_path, test.numpy(), "input", "logits", 64, key)
        diffs[name] = float(np.abs(out - ref).max()) if np.isfinite(out).all() else float("inf")
    assert diffs["guarded"] < 2e-2 < diffs["plain"], diffs
