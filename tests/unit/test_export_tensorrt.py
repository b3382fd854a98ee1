"""TensorRT 10.x and 11.x: the build and load paths against two fake `tensorrt` modules that expose exactly the
Python surface each version has (what 11 removed raises AttributeError there), the engine key and its refusal,
the timing cache key, DLA, the trtexec lines per version, the errors without TensorRT, and the pipeline wiring.

The surfaces follow NVIDIA's docs: TensorRT 11 removed BuilderFlag.FP16/INT8/BF16/FP8/INT4/FP4/
OBEY_PRECISION_CONSTRAINTS/PREFER_PRECISION_CONSTRAINTS/DIRECT_IO, IBuilderConfig.int8_calibrator and the
quantization flags, every IInt8*Calibrator, Builder.platform_has_fast_fp16/int8 and platform_has_tf32,
ITensor.set_dynamic_range, ILayer.precision/set_output_type, and NetworkDefinitionCreationFlag.EXPLICIT_BATCH
(STRONGLY_TYPED stays, deprecated and ignored: strong typing is 11's only mode). Building real engines needs
TensorRT and CUDA (marked `tensorrt`/`gpu`, run by benchmarks/scripts/cuda_check.sh on a GPU machine).
"""

from __future__ import annotations

import enum
import importlib.util
import json
import shlex
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from exporters import export_run, load_manifest, verify_all
from exporters import tensorrt as T
from toolkit.errors import EdgespecError, UserError

ORIN = T.Target("10.3.0", "Orin (nvgpu)", "8.7")


def fake_tensorrt(version: str = "10.3.0", parse_ok: bool = True, build_ok: bool = True,
                  dla_cores: int = 0) -> types.ModuleType:
    """A `tensorrt` module with exactly the 10.x or 11.x Python surface edgespec could touch; records calls.

    A strongly typed 10.x network refuses precision flags at build time, as TensorRT 10 does; 11.x has no such
    flags at all. Engines it "serializes" are bytes that its Runtime deserializes again (same major version)."""
    major = int(version.split(".")[0])
    ten = major == 10
    log: dict = {"flags": set(), "profiles": [], "pools": {}, "cache_in": None, "parsed": None, "network_flags": None}
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = log

    if ten:
        class NetworkDefinitionCreationFlag(enum.IntEnum):
            EXPLICIT_BATCH = 0
            STRONGLY_TYPED = 1
            PREFER_AOT_PYTHON_PLUGINS = 2
            PREFER_JIT_PYTHON_PLUGINS = 3

        BuilderFlag = enum.Enum("BuilderFlag", [
            "FP16", "BF16", "INT8", "FP8", "INT4", "FP4", "REFIT", "DISABLE_TIMING_CACHE", "TF32", "SPARSE_WEIGHTS",
            "SAFETY_SCOPE", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO",
            "REJECT_EMPTY_ALGORITHMS", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "GPU_FALLBACK", "DEBUG"])
    else:
        class NetworkDefinitionCreationFlag(enum.IntEnum):  # type: ignore[no-redef]
            STRONGLY_TYPED = 1  # deprecated in 11.0, retained and ignored
            PREFER_AOT_PYTHON_PLUGINS = 2
            PREFER_JIT_PYTHON_PLUGINS = 3

        BuilderFlag = enum.Enum("BuilderFlag", [  # type: ignore[misc]
            "REFIT", "DISABLE_TIMING_CACHE", "TF32", "SPARSE_WEIGHTS", "SAFETY_SCOPE", "VERSION_COMPATIBLE",
            "EXCLUDE_LEAN_RUNTIME", "GPU_FALLBACK", "DEBUG"])
    precision_flags = {getattr(BuilderFlag, n) for n in ("FP16", "INT8", "BF16", "FP8") if hasattr(BuilderFlag, n)}
    trt.NetworkDefinitionCreationFlag, trt.BuilderFlag = NetworkDefinitionCreationFlag, BuilderFlag
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM",
                                                      "DLA_GLOBAL_DRAM", "TACTIC_DRAM"])
    trt.DeviceType = enum.Enum("DeviceType", ["GPU", "DLA"])
    trt.DataType = enum.Enum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "BF16", "INT64", "FP8"])
    trt.TensorIOMode = enum.Enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    if ten:
        for name in ("IInt8Calibrator", "IInt8LegacyCalibrator", "IInt8EntropyCalibrator", "IInt8EntropyCalibrator2",
                     "IInt8MinMaxCalibrator"):
            setattr(trt, name, type(name, (), {}))

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

    class Tensor:
        __slots__ = ("name", "dtype") + (() if not ten else ("dynamic_range",))

        def __init__(self, name):
            self.name, self.dtype = name, trt.DataType.FLOAT

    if ten:
        def set_dynamic_range(self, lo, hi):
            raise AssertionError("set_dynamic_range called: explicit quantization only")
        Tensor.set_dynamic_range = set_dynamic_range

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.strongly_typed = bool(flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED))) or not ten

        def get_input(self, i):
            return Tensor("input")

    config_slots = ("cache", "default_device_type", "DLA_core") + (("int8_calibrator",) if ten else ())

    class Config:
        __slots__ = config_slots

        def __init__(self):
            self.default_device_type = trt.DeviceType.GPU
            self.DLA_core = -1

        def set_memory_pool_limit(self, pool, size):
            log["pools"][pool.name] = size

        def set_flag(self, flag):
            log["flags"].add(flag.name)

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
        num_DLA_cores = dla_cores
        max_DLA_batch_size = 32 if dla_cores else 1

        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            log["network_flags"] = flags
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            log["device"] = (config.default_device_type.name, config.DLA_core)
            if network.strongly_typed and {f.name for f in precision_flags} & log["flags"]:
                return None  # TensorRT 10 rejects precision flags on a strongly typed network
            if getattr(config, "int8_calibrator", None) is not None:
                return None
            return f"ENGINE{major}".encode() if build_ok else None

    if ten:
        Builder.platform_has_fast_fp16 = True
        Builder.platform_has_fast_int8 = True
        Builder.platform_has_tf32 = True

    class OnnxParser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            log["parsed"] = path
            return parse_ok

        def parse(self, data):
            log["parsed"] = "<bytes>"
            return parse_ok

        def get_error(self, i):
            return "Unsupported operator FancyOp"

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["input", "logits"][i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return trt.DataType.FLOAT

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            log["deserialized"] = bytes(data)
            return Engine() if bytes(data) == f"ENGINE{major}".encode() else None

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    return trt


FAKES = {"10": lambda **kw: fake_tensorrt("10.3.0", **kw), "11": lambda **kw: fake_tensorrt("11.4.1", **kw)}


def _onnx(path: Path, precision: str) -> Path:
    """A tiny ONNX file typed like the real sources: fp16 (Cast to float16 around a float16 weight), int8 (QDQ)."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, 16, 16])
    if precision == "fp16":
        w = helper.make_tensor("w", TensorProto.FLOAT16, [1], [1.0])
        nodes = [helper.make_node("Cast", ["input"], ["h"], to=TensorProto.FLOAT16),
                 helper.make_node("Mul", ["h", "w"], ["m"]),
                 helper.make_node("Cast", ["m"], ["logits"], to=TensorProto.FLOAT)]
        inits = [w]
    elif precision == "int8":
        s = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
        z = helper.make_tensor("z", TensorProto.INT8, [], [0])
        nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["logits"])]
        inits = [s, z]
    else:
        nodes, inits = [helper.make_node("Relu", ["input"], ["logits"])], []
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits)), str(path))
    return path


def _spec(tmp_path: Path, precision: str = "fp16", cache: bool = True, **kw) -> T.EngineSpec:
    src = _onnx(tmp_path / f"m.{precision}.onnx", precision)
    return T.EngineSpec(src, tmp_path / f"m.{precision}.engine", precision, "input", (3, 16, 16),
                        min_batch=1, opt_batch=4, max_batch=16, workspace_mb=256,
                        timing_cache=tmp_path / "tensorrt.cache" if cache else None, **kw)


def _target(version: str) -> T.Target:
    return T.Target(version, ORIN.gpu_name, ORIN.compute_capability)


@pytest.mark.parametrize("major", ["10", "11"])
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_strongly_typed_build_on_both_versions(tmp_path, major, precision):
    trt = FAKES[major]()
    spec = _spec(tmp_path, precision)
    info = T.build_engine(spec, trt, _target(trt.__version__))
    calls = trt.calls
    assert calls["flags"] == set()  # no precision flag, ever: the ONNX file's types are the precision
    assert calls["network_flags"] == (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if major == "10"
                                      else 0)
    assert calls["pools"] == {"WORKSPACE": 256 * 1024 * 1024}
    assert calls["profiles"] == [("input", (1, 3, 16, 16), (4, 3, 16, 16), (16, 3, 16, 16))]
    assert calls["profile_added"] and calls["parsed"] == str(spec.onnx_path) and calls["ignore_mismatch"] is False
    assert spec.engine_path.read_bytes() == f"ENGINE{major}".encode() and calls["device"] == ("GPU", -1)
    assert info["strongly_typed"] and info["precision_flags"] == [] and info["tensorrt_major"] == int(major)
    key = info["engine_key"]
    assert key["tensorrt_version"] == trt.__version__ and key["compute_capability"] == "8.7"
    assert key["gpu_name"] == ORIN.gpu_name and key["precision"] == precision and key["device"] == "gpu"
    assert key["onnx_sha256"] == T.sha256_bytes(spec.onnx_path.read_bytes())
    assert key["profile"] == {"min": [1, 3, 16, 16], "opt": [4, 3, 16, 16], "max": [16, 3, 16, 16]}
    assert key["timing_cache_sha256"] == T.sha256_bytes(b"+tuned") == info["timing_cache"]["sha256"]


def test_the_fakes_expose_exactly_each_versions_surface():
    t10, t11 = FAKES["10"](), FAKES["11"]()
    for removed in ("FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "DIRECT_IO"):
        assert hasattr(t10.BuilderFlag, removed)
        with pytest.raises(AttributeError):
            getattr(t11.BuilderFlag, removed)
    with pytest.raises(AttributeError):
        t11.NetworkDefinitionCreationFlag.EXPLICIT_BATCH  # noqa: B018
    with pytest.raises(AttributeError):
        t11.IInt8EntropyCalibrator2  # noqa: B018
    with pytest.raises(AttributeError):
        t11.Builder(None).platform_has_fast_fp16  # noqa: B018
    with pytest.raises(AttributeError):
        t11.Builder(None).create_builder_config().int8_calibrator = object()
    with pytest.raises(AttributeError):
        t11.Builder(None).create_network(0).get_input(0).set_dynamic_range(-1, 1)
    assert t10.IInt8EntropyCalibrator2 and t10.Builder(None).platform_has_fast_int8
    assert t11.NetworkDefinitionCreationFlag.STRONGLY_TYPED and t11.BuilderFlag.GPU_FALLBACK
    # the old weakly typed build cannot even be written against 11, and fails on a strongly typed 10 network
    net = t10.Builder(None).create_network(1 << int(t10.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    cfg = t10.Builder(None).create_builder_config()
    cfg.set_flag(t10.BuilderFlag.FP16)
    assert t10.Builder(None).build_serialized_network(net, cfg) is None


@pytest.mark.parametrize("precision, found", [("fp16", "fp32"), ("int8", "fp16"), ("fp16", "int8")])
def test_the_onnx_file_must_carry_the_precision(tmp_path, precision, found):
    """Strongly typed: an fp32 file would build an fp32 engine labelled fp16; refused before TensorRT runs."""
    src = _onnx(tmp_path / "src.onnx", found)
    spec = T.EngineSpec(src, tmp_path / "e.engine", precision, "input", (3, 16, 16))
    trt = FAKES["10"]()
    with pytest.raises(UserError, match=f"needs a {precision} ONNX file.*is {found}"):
        T.build_engine(spec, trt, ORIN)
    assert trt.calls["parsed"] is None and not spec.engine_path.exists()


@pytest.mark.parametrize("major", ["10", "11"])
def test_engine_loads_only_where_it_was_built(tmp_path, major):
    trt = FAKES[major]()
    here = _target(trt.__version__)
    spec = _spec(tmp_path)
    key = T.build_engine(spec, trt, here)["engine_key"]
    assert T.load_engine(spec.engine_path, key, trt, here).num_io_tensors == 2
    other_version = "11.4.1" if major == "10" else "10.3.0"
    with pytest.raises(UserError, match=f"built for TensorRT {trt.__version__}.*rebuild"):
        T.load_engine(spec.engine_path, key, FAKES["11" if major == "10" else "10"](), _target(other_version))
    with pytest.raises(UserError, match=r"compute capability 8\.7 .*H200: 9\.0.*rebuild it on this device"):
        T.load_engine(spec.engine_path, key, trt, T.Target(trt.__version__, "NVIDIA H200", "9.0"))
    with pytest.raises(UserError, match="no engine key.*rebuild"):
        T.load_engine(spec.engine_path, None, trt, here)
    assert "deserialized" in trt.calls  # only the matching load reached TensorRT
    # same compute capability, other board name: loads, with a warning
    assert T.load_engine(spec.engine_path, key, trt, T.Target(trt.__version__, "Orin Nano", "8.7")) is not None


def test_timing_cache_is_keyed_like_the_engine(tmp_path, caplog):
    spec = _spec(tmp_path)
    trt = FAKES["10"]()
    T.build_engine(spec, trt, ORIN)
    assert trt.calls["cache_in"] == b""
    key_file = tmp_path / "tensorrt.cache.key.json"
    assert json.loads(key_file.read_text())["compute_capability"] == "8.7"
    trt = FAKES["10"]()
    info = T.build_engine(spec, trt, ORIN)  # same TensorRT and GPU: reused
    assert trt.calls["cache_in"] == b"+tuned" and info["timing_cache"]["reused"]
    assert spec.timing_cache.read_bytes() == b"+tuned+tuned"
    trt = FAKES["11"]()
    info = T.build_engine(spec, trt, _target("11.4.1"))  # another TensorRT: the stale cache is not fed in
    assert trt.calls["cache_in"] == b"" and not info["timing_cache"]["reused"]
    assert "TensorRT 10.3.0" in info["timing_cache"]["stale"] and "not reused" in caplog.text
    spec.timing_cache.write_bytes(b"edited")  # bytes that do not match the key file: not reused either
    trt = FAKES["11"]()
    assert not T.build_engine(spec, trt, _target("11.4.1"))["timing_cache"]["reused"] and trt.calls["cache_in"] == b""


def test_no_timing_cache_file_when_none_is_asked(tmp_path):
    info = T.build_engine(_spec(tmp_path, cache=False), FAKES["11"](), _target("11.4.1"))
    assert not (tmp_path / "tensorrt.cache").exists() and info["engine_key"]["timing_cache_sha256"] is None


@pytest.mark.parametrize("major", ["10", "11"])
def test_parser_and_builder_failures_are_loud(tmp_path, major):
    t = _target(FAKES[major]().__version__)
    with pytest.raises(EdgespecError, match="Unsupported operator FancyOp"):
        T.build_engine(_spec(tmp_path), FAKES[major](parse_ok=False), t)
    with pytest.raises(EdgespecError, match="failed to build"):
        T.build_engine(_spec(tmp_path), FAKES[major](build_ok=False), t)
    assert not (tmp_path / "m.fp16.engine").exists()


@pytest.mark.parametrize("major", ["10", "11"])
def test_dla_core_with_and_without_gpu_fallback(tmp_path, major):
    trt = FAKES[major](dla_cores=2)
    info = T.build_engine(_spec(tmp_path, dla_core=1), trt, _target(trt.__version__))
    assert trt.calls["device"] == ("DLA", 1) and trt.calls["flags"] == {"GPU_FALLBACK"}
    assert info["engine_key"]["device"] == "dla" and info["engine_key"]["dla_core"] == 1
    trt = FAKES[major](dla_cores=2)
    T.build_engine(_spec(tmp_path, dla_core=0, gpu_fallback=False), trt, _target(trt.__version__))
    assert trt.calls["device"] == ("DLA", 0) and trt.calls["flags"] == set()
    with pytest.raises(UserError, match="dla_core 2 asked for, but this device has 2"):
        T.build_engine(_spec(tmp_path, dla_core=2), FAKES[major](dla_cores=2), _target(trt.__version__))


def test_dla_is_refused_on_tensorrt_11_releases_without_it(tmp_path):
    with pytest.raises(UserError, match="TensorRT 11.2.0 has no DLA support"):
        T.build_engine(_spec(tmp_path, dla_core=0), fake_tensorrt("11.2.0", dla_cores=2), _target("11.2.0"))


def test_trtexec_lines_per_version(tmp_path):
    spec = _spec(tmp_path, "int8")
    ten, eleven = T.trtexec_argv(spec, 10), T.trtexec_argv(spec, 11)
    for argv in (ten, eleven):
        assert argv[0] == "trtexec" and f"--onnx={spec.onnx_path}" in argv
        assert f"--saveEngine={tmp_path / 'm.int8.engine'}" in argv
        assert "--minShapes=input:1x3x16x16" in argv and "--optShapes=input:4x3x16x16" in argv
        assert "--maxShapes=input:16x3x16x16" in argv and "--memPoolSize=workspace:256M" in argv
        assert "--noDataTransfers" in argv and f"--timingCacheFile={tmp_path / 'tensorrt.cache'}" in argv
        assert not {"--fp16", "--int8", "--best"} & set(argv) and not any(a.startswith("--calib") for a in argv)
    assert "--stronglyTyped" in ten and "--stronglyTyped" not in eleven
    assert set(ten) - set(eleven) == {"--stronglyTyped"}
    dla = T.trtexec_argv(_spec(tmp_path, dla_core=1), 10)
    assert "--useDLACore=1" in dla and "--allowGPUFallback" in dla
    assert "--allowGPUFallback" not in T.trtexec_argv(_spec(tmp_path, dla_core=1, gpu_fallback=False), 11)
    assert shlex.split(T.trtexec_command(spec, 11)) == eleven
    assert T.trtexec_commands(spec) == {"10": shlex.join(ten), "11": shlex.join(eleven)}
    with pytest.raises(UserError, match="TensorRT 12.x"):
        T.trtexec_argv(spec, 12)


def test_bad_spec_is_refused(tmp_path):
    with pytest.raises(UserError, match="fp16 or int8"):
        T.EngineSpec(tmp_path / "m.onnx", tmp_path / "e", "fp32", "input", (3, 8, 8))
    with pytest.raises(UserError, match="min <= opt <= max"):
        T.EngineSpec(tmp_path / "m.onnx", tmp_path / "e", "fp16", "input", (3, 8, 8), 1, 8, 4)
    with pytest.raises(UserError, match="dla_core"):
        T.EngineSpec(tmp_path / "m.onnx", tmp_path / "e", "fp16", "input", (3, 8, 8), dla_core=-1)


def test_clear_errors_without_tensorrt_or_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    with pytest.raises(UserError, match="not installed.*edgespec bundle.*trtexec"):
        T.import_tensorrt()
    for version in ("8.6.1", "12.0.0"):
        monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(version))
        with pytest.raises(UserError, match=rf"TensorRT 10\.x or 11\.x, found {version}"):
            T.import_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", FAKES["11"]())
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(UserError, match="CUDA GPU.*edgespec bundle"):
        T.import_tensorrt()
    assert T.import_tensorrt(check_gpu=False).__version__ == "11.4.1"
    with pytest.raises(UserError, match="CUDA GPU"):
        T.local_target(FAKES["10"]())


def test_export_refuses_tensorrt_before_any_work_without_it(digits_run, tmp_path, monkeypatch):
    monkeypatch.setattr("exporters.formats._cuda_available", lambda: False)
    with pytest.raises(UserError, match="trtexec --onnx=.*digits.fp16.onnx.*--stronglyTyped.*TensorRT 11"):
        export_run(digits_run, "onnx,tensorrt-fp16", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("major", ["10", "11"])
def test_export_pipeline_with_fake_tensorrt(digits_run, tmp_path, monkeypatch, major):
    """Wiring: each engine is built from the ONNX file that carries its precision, checked, shipped with that file,
    its engine key and the trtexec line for the TensorRT that built it."""
    from exporters.parity import run_onnxruntime

    trt = FAKES[major]()
    target = _target(trt.__version__)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr("exporters.formats.Format.missing", lambda self: [])  # as on a GPU host with TensorRT
    monkeypatch.setattr(T, "import_tensorrt", lambda check_gpu=True, hint="": trt)
    monkeypatch.setattr(T, "local_target", lambda trt: target)
    sources: dict[str, Path] = {}
    real_build = T.build_engine

    def build(spec, trt=None, target=None):
        sources[spec.engine_path.name] = spec.onnx_path
        return real_build(spec, trt, target)

    def run(path, images, i, o, b, key=None):  # a stand-in engine: its source ONNX, after the real key check
        T.check_engine_key(key, target)
        return run_onnxruntime(sources[Path(path).name], images, i)

    monkeypatch.setattr(T, "build_engine", build)
    monkeypatch.setattr(T, "run_engine", run)
    out = tmp_path / "out"
    entries = export_run(digits_run, "tensorrt-fp16,tensorrt-int8", out, calib_count=32, max_batch=8)
    by = {e["format"]: e for e in entries}
    assert list(by) == ["onnx-fp16", "onnx-int8", "tensorrt-fp16", "tensorrt-int8"]  # the sources ship too
    assert {k: v.name for k, v in sources.items()} == {"digits.fp16.engine": "digits.fp16.onnx",
                                                       "digits.int8.engine": "digits.int8.onnx"}
    assert trt.calls["flags"] == set() and trt.calls["profiles"][-1] == ("input", (1, 1, 8, 8), (1, 1, 8, 8),
                                                                         (8, 1, 8, 8))
    assert (out / "digits.int8.engine").read_bytes() == f"ENGINE{major}".encode() and (out / "tensorrt.cache").is_file()
    for fmt, src in (("tensorrt-fp16", "fp16"), ("tensorrt-int8", "int8")):
        e = by[fmt]
        assert e["trtexec"].startswith(f"trtexec --onnx=digits.{src}.onnx --saveEngine=digits.{src}.engine")
        assert ("--stronglyTyped" in e["trtexec"]) == (major == "10") and "--noDataTransfers" in e["trtexec"]
        assert e["engine_key"]["tensorrt_version"] == trt.__version__ and e["engine_key"]["compute_capability"] == "8.7"
        assert e["engine_key"]["onnx_sha256"] == by[f"onnx-{src}"]["sha256"] and e["parity"]["passed"]
        assert set(e["built"]["details"]["trtexec_by_version"]) == {"10", "11"}
    assert by["tensorrt-int8"]["calibration"] == by["onnx-int8"]["calibration"]
    assert "fp16_guard" in by["onnx-fp16"]["built"]["details"]
    assert len(verify_all(out)) == 4 and len(load_manifest(out)["artifacts"]) == 4


def _have_tensorrt_and_cuda() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not _have_tensorrt_and_cuda(), reason="needs TensorRT 10.x/11.x and a CUDA GPU")
def test_real_engines_pass_parity(digits_run, tmp_path):
    entries = export_run(digits_run, "tensorrt-fp16,tensorrt-int8", tmp_path / "out", calib_count=64)
    by_format = {e["format"]: e for e in entries}
    assert set(by_format) == {"onnx-fp16", "onnx-int8", "tensorrt-fp16", "tensorrt-int8"}
    for fmt in ("tensorrt-fp16", "tensorrt-int8"):
        assert by_format[fmt]["parity"]["passed"] and (tmp_path / "out" / by_format[fmt]["path"]).stat().st_size
        assert by_format[fmt]["engine_key"]["strongly_typed"]
    e = by_format["tensorrt-fp16"]
    logits = T.run_engine(tmp_path / "out" / e["path"], np.zeros((3, 1, 8, 8), np.float32), "input", "logits", 32,
                          e["engine_key"])
    assert logits.shape == (3, 10)
    wrong = {**e["engine_key"], "compute_capability": "1.0"}
    with pytest.raises(UserError, match="rebuild"):
        T.run_engine(tmp_path / "out" / e["path"], np.zeros((1, 1, 8, 8), np.float32), "input", "logits", 32, wrong)
