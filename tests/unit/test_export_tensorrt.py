"""TensorRT: builder configuration against a fake `tensorrt` module, the trtexec command line, the errors without
TensorRT, and the pipeline wiring. Building real engines needs TensorRT and CUDA (marked, skipped here)."""

from __future__ import annotations

import importlib.util
import shlex
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from exporters import export_run, load_manifest, verify_all
from exporters import tensorrt as T
from toolkit.errors import EdgespecError, UserError


def fake_tensorrt(version: str = "10.3.0", parse_ok: bool = True, build_ok: bool = True) -> types.ModuleType:
    """Just enough of the TensorRT 10 Python API to record what build_engine asks of it."""
    log: dict = {"flags": set(), "profiles": [], "pools": {}, "cache_in": None, "parsed": None, "network_flags": None}
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = log
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")

    class Logger:
        WARNING = "warning"

        def __init__(self, level):
            log["log_level"] = level

    class Cache:
        def __init__(self, data: bytes):
            self.data = bytes(data)

        def serialize(self) -> bytes:
            return self.data + b"+tuned"

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            log["profiles"].append((name, tuple(lo), tuple(opt), tuple(hi)))

    class Config:
        __slots__ = ("cache",)  # no int8_calibrator attribute can be set: explicit quantization only

        def set_memory_pool_limit(self, pool, size):
            log["pools"][pool] = size

        def set_flag(self, flag):
            log["flags"].add(flag)

        def add_optimization_profile(self, profile):
            log["profile_added"] = True

        def create_timing_cache(self, data):
            log["cache_in"] = bytes(data)
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            log["ignore_mismatch"] = ignore_mismatch

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            log["network_flags"] = flags
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"ENGINE" if build_ok else None

    class OnnxParser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            log["parsed"] = path
            return parse_ok

        def get_error(self, i):
            return "Unsupported operator FancyOp"

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    return trt


def _spec(tmp_path: Path, precision: str = "fp16", cache: bool = True) -> T.EngineSpec:
    return T.EngineSpec(tmp_path / "m.onnx", tmp_path / f"m.{precision}.engine", precision, "input", (3, 16, 16),
                        min_batch=1, opt_batch=4, max_batch=16, workspace_mb=256,
                        timing_cache=tmp_path / "tensorrt.cache" if cache else None)


@pytest.mark.parametrize("precision, flags", [("fp16", {"FP16"}), ("int8", {"FP16", "INT8"})])
def test_builder_config(tmp_path, precision, flags):
    trt = fake_tensorrt()
    spec = _spec(tmp_path, precision)
    info = T.build_engine(spec, trt)
    calls = trt.calls
    assert calls["flags"] == flags
    assert calls["pools"] == {"WORKSPACE": 256 * 1024 * 1024}
    assert calls["profiles"] == [("input", (1, 3, 16, 16), (4, 3, 16, 16), (16, 3, 16, 16))]
    assert calls["profile_added"] and calls["parsed"] == str(spec.onnx_path) and calls["network_flags"] == 0
    assert spec.engine_path.read_bytes() == b"ENGINE"
    assert calls["cache_in"] == b"" and spec.timing_cache.read_bytes() == b"+tuned"
    assert info["profile"] == {"min": [1, 3, 16, 16], "opt": [4, 3, 16, 16], "max": [16, 3, 16, 16]}


def test_timing_cache_is_reused_between_builds(tmp_path):
    spec = _spec(tmp_path)
    spec.timing_cache.write_bytes(b"previous")
    trt = fake_tensorrt()
    T.build_engine(spec, trt)
    assert trt.calls["cache_in"] == b"previous" and spec.timing_cache.read_bytes() == b"previous+tuned"


def test_no_timing_cache_file_when_none_is_asked(tmp_path):
    T.build_engine(_spec(tmp_path, cache=False), fake_tensorrt())
    assert not (tmp_path / "tensorrt.cache").exists()


def test_parser_and_builder_failures_are_loud(tmp_path):
    with pytest.raises(EdgespecError, match="Unsupported operator FancyOp"):
        T.build_engine(_spec(tmp_path), fake_tensorrt(parse_ok=False))
    with pytest.raises(EdgespecError, match="failed to build"):
        T.build_engine(_spec(tmp_path), fake_tensorrt(build_ok=False))
    assert not (tmp_path / "m.fp16.engine").exists()


def test_trtexec_argv(tmp_path):
    argv = T.trtexec_argv(_spec(tmp_path, "int8"))
    assert argv[0] == "trtexec"
    assert f"--onnx={tmp_path / 'm.onnx'}" in argv and f"--saveEngine={tmp_path / 'm.int8.engine'}" in argv
    assert "--minShapes=input:1x3x16x16" in argv and "--optShapes=input:4x3x16x16" in argv
    assert "--maxShapes=input:16x3x16x16" in argv and "--memPoolSize=workspace:256M" in argv
    assert "--int8" in argv and "--fp16" in argv and f"--timingCacheFile={tmp_path / 'tensorrt.cache'}" in argv
    assert "--int8" not in T.trtexec_argv(_spec(tmp_path, "fp16"))
    assert shlex.split(T.trtexec_command(_spec(tmp_path))) == T.trtexec_argv(_spec(tmp_path))


def test_bad_spec_is_refused(tmp_path):
    with pytest.raises(UserError, match="fp16 or int8"):
        T.EngineSpec(tmp_path / "m.onnx", tmp_path / "e", "fp32", "input", (3, 8, 8))
    with pytest.raises(UserError, match="min <= opt <= max"):
        T.EngineSpec(tmp_path / "m.onnx", tmp_path / "e", "fp16", "input", (3, 8, 8), 1, 8, 4)


def test_clear_errors_without_tensorrt_or_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    with pytest.raises(UserError, match="not installed.*edgespec bundle.*trtexec"):
        T.import_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("8.6.1"))
    with pytest.raises(UserError, match="TensorRT 10, found 8.6.1"):
        T.import_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(UserError, match="CUDA GPU.*edgespec bundle"):
        T.import_tensorrt()
    assert T.import_tensorrt(check_gpu=False).__version__ == "10.3.0"


def test_export_refuses_tensorrt_before_any_work_without_it(digits_run, tmp_path, monkeypatch):
    monkeypatch.setattr("exporters.formats._cuda_available", lambda: False)
    with pytest.raises(UserError, match="trtexec --onnx=.*digits.onnx.*--fp16"):
        export_run(digits_run, "onnx,tensorrt-fp16", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_pipeline_with_fake_tensorrt(digits_run, tmp_path, monkeypatch):
    """Wiring: the engine is built from the right ONNX file, checked, shipped with its source and trtexec line."""
    from exporters.parity import run_onnxruntime

    trt = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr("exporters.formats.Format.missing", lambda self: [])  # as on a GPU host with TensorRT
    monkeypatch.setattr(T, "import_tensorrt", lambda check_gpu=True, hint="": trt)
    # a stand-in engine that computes what its source ONNX computes
    monkeypatch.setattr(T, "run_engine", lambda path, images, i, o, b: run_onnxruntime(
        Path(trt.calls["parsed"]), images, i))
    out = tmp_path / "out"
    entries = export_run(digits_run, "tensorrt-int8", out, calib_count=32, max_batch=8)
    assert [e["format"] for e in entries] == ["onnx-int8", "tensorrt-int8"]  # the source ONNX ships too
    engine = entries[1]
    assert trt.calls["parsed"].endswith("digits.int8.onnx") and trt.calls["flags"] == {"FP16", "INT8"}
    assert trt.calls["profiles"] == [("input", (1, 1, 8, 8), (1, 1, 8, 8), (8, 1, 8, 8))]
    assert (out / "digits.int8.engine").read_bytes() == b"ENGINE" and (out / "tensorrt.cache").is_file()
    assert engine["trtexec"].startswith("trtexec --onnx=digits.int8.onnx --saveEngine=digits.int8.engine")
    assert engine["calibration"] == entries[0]["calibration"] and engine["parity"]["passed"]
    assert len(verify_all(out)) == 2 and len(load_manifest(out)["artifacts"]) == 2


def _have_tensorrt_and_cuda() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not _have_tensorrt_and_cuda(), reason="needs TensorRT 10 and a CUDA GPU")
def test_real_engines_pass_parity(digits_run, tmp_path):
    entries = export_run(digits_run, "tensorrt-fp16,tensorrt-int8", tmp_path / "out", calib_count=64)
    by_format = {e["format"]: e for e in entries}
    assert set(by_format) == {"onnx", "onnx-int8", "tensorrt-fp16", "tensorrt-int8"}
    for fmt in ("tensorrt-fp16", "tensorrt-int8"):
        assert by_format[fmt]["parity"]["passed"] and (tmp_path / "out" / by_format[fmt]["path"]).stat().st_size
    logits = T.run_engine(tmp_path / "out" / by_format["tensorrt-fp16"]["path"],
                          np.zeros((3, 1, 8, 8), np.float32), "input", "logits", 32)
    assert logits.shape == (3, 10)
