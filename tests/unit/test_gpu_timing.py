"""trtexec-style GPU timing bookkeeping (benchmarks/gpu_timing.py) against a fake CUDA whose events read a fake
clock, the bench's TensorRT runner refusing engines keyed elsewhere, and the version gate of `tensorrt_available`.
Real GPU figures come only from benchmarks/scripts/cuda_check.sh on a GPU machine (none here)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from benchmarks import gpu_timing as G
from toolkit.errors import UserError


class FakeCuda:
    """Events stamp a clock that the fake phases advance: H2D 1 ms, compute 5 ms (+ jitter), D2H 2 ms."""

    def __init__(self, jitter: float = 0.0):
        self.now = 0.0
        self.jitter = jitter
        self.n = 0
        self.captured = 0
        self.cuda_graphs = []
        fake = self

        class Event:
            def __init__(self, enable_timing=False):
                assert enable_timing
                self.t = None

            def record(self, stream):
                self.t = fake.now

            def synchronize(self):
                assert self.t is not None

            def elapsed_time(self, other):
                return other.t - self.t

        class CUDAGraph:
            def __init__(self):
                self.body = None
                fake.cuda_graphs.append(self)

            def replay(self):
                self.body()

        class _Capture:
            def __init__(self, graph, stream=None):
                self.graph = graph

            def __enter__(self):
                fake.capturing = self.graph

            def __exit__(self, *exc):
                fake.capturing = None

        self.Event, self.CUDAGraph, self.graph = Event, CUDAGraph, _Capture
        self.capturing = None

    def clock(self) -> float:  # the host clock in seconds, in step with the GPU's (fake) milliseconds
        return self.now / 1e3

    def h2d(self):
        self.now += 1.0

    def compute(self):
        if self.capturing is not None:  # captured, not run: replay runs it
            self.captured += 1
            self.capturing.body = self._compute
            return
        self._compute()

    def _compute(self):
        self.n += 1
        self.now += 5.0 + (self.jitter if self.n % 2 else 0.0)

    def d2h(self):
        self.now += 2.0


class Stream:
    def synchronize(self):
        pass


def test_phases_are_timed_by_the_right_events():
    cuda = FakeCuda()
    res = G.time_phases(cuda.h2d, cuda.compute, cuda.d2h, Stream(), runs=20, warmup=3, cuda=cuda, clock=cuda.clock)
    assert res["h2d_ms"]["p50"] == 1.0 and res["compute_ms"]["p50"] == 5.0 and res["d2h_ms"]["p50"] == 2.0
    assert res["runs"] == 20 and cuda.n == 23 and res["warnings"] == [] and res["compute_ms"]["cv"] == 0.0
    assert res["end_to_end_ms"]["p50"] == pytest.approx(8.0) and not res["cuda_graph"]
    assert set(res["end_to_end_ms"]) >= {"p50", "p90", "p99", "mean", "std", "cv"}
    assert "measured on device" in res["measurement"]


def test_unstable_compute_is_flagged_with_its_coefficient_of_variation(caplog):
    cuda = FakeCuda(jitter=2.0)  # 5 ms / 7 ms alternating: CV ~ 17%
    res = G.time_phases(cuda.h2d, cuda.compute, cuda.d2h, Stream(), runs=20, warmup=0, cuda=cuda, clock=cuda.clock)
    assert res["compute_ms"]["p99"] > res["compute_ms"]["p50"] and res["compute_ms"]["cv"] > 0.1
    assert any(w.startswith("compute time is unstable: coefficient of variation 16.7%") for w in res["warnings"])
    assert "unstable" in caplog.text


def test_cuda_graph_captures_compute_once_and_replays_it():
    cuda = FakeCuda()
    res = G.time_phases(cuda.h2d, cuda.compute, cuda.d2h, Stream(), runs=10, warmup=2, cuda=cuda, cuda_graph=True,
                        clock=cuda.clock)
    assert res["cuda_graph"] and cuda.captured == 1 and len(cuda.cuda_graphs) == 1
    assert cuda.n == 12 and res["compute_ms"]["p50"] == 5.0  # 2 warm-up launches + 10 replays


def test_phase_stats_match_numpy():
    ms = [1.0, 2.0, 3.0, 4.0, 10.0]
    s = G.phase_stats(ms)
    assert s["p50"] == 3.0 and s["p99"] == pytest.approx(float(np.percentile(ms, 99)))
    assert s["cv"] == pytest.approx(np.std(ms) / np.mean(ms)) and s["min"] == 1.0 and s["max"] == 10.0
    with pytest.raises(ValueError):
        G.time_phases(lambda: None, lambda: None, lambda: None, Stream(), runs=0, cuda=FakeCuda())


def _fakes():
    import importlib.util as iu

    spec = iu.spec_from_file_location("trt_fakes", Path(__file__).with_name("test_export_tensorrt.py"))
    mod = iu.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_bench_runner_refuses_an_engine_keyed_elsewhere(tmp_path):
    from benchmarks.runtimes import TrtRunner
    from exporters import tensorrt as T

    f = _fakes()
    trt = f.fake_tensorrt("11.4.1")
    here = T.Target("11.4.1", "NVIDIA H200", "9.0")
    spec = f._spec(tmp_path)
    key = T.build_engine(spec, trt, here)["engine_key"]
    with pytest.raises(UserError, match="built for TensorRT 11.4.1.*rebuild"):
        TrtRunner(spec.engine_path, key, trt, T.Target("10.3.0", "NVIDIA H200", "9.0"))
    with pytest.raises(UserError, match="compute capability 9.0.*rebuild"):
        TrtRunner(spec.engine_path, key, trt, T.Target("11.4.1", "Orin", "8.7"))
    assert "deserialized" not in trt.calls  # refused before TensorRT saw the bytes


def test_tensorrt_available_names_an_unsupported_version(monkeypatch):
    from benchmarks.runtimes import tensorrt_available

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.1"))
    ok, why = tensorrt_available()
    assert not ok and "found 8.6.1" in why
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="11.4.1"))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert tensorrt_available() == (False, "no CUDA GPU is visible")
