"""The on-device runner's timing harness is a copy of benchmarks/timing.py (the device has no edgespec):
both must produce the same statistics from the same samples and stop timing at the same point."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchmarks import timing as bench_timing
from toolkit.bundle.runner import timing as device_timing


@pytest.mark.parametrize("seed,n,batch", [(0, 1, 1), (1, 7, 8), (2, 200, 32), (3, 1000, 4)])
def test_same_statistics_on_the_same_samples(seed, n, batch):
    times = list(np.random.default_rng(seed).lognormal(-7, 0.5, n))  # seconds, skewed like real latencies
    assert device_timing.summarize(times, batch) == bench_timing.summarize(times, batch)


def test_same_defaults_and_batches():
    assert device_timing.TimingConfig().__dict__ == bench_timing.TimingConfig().model_dump()
    images = np.random.default_rng(0).standard_normal((3, 1, 4, 4)).astype(np.float32)
    for bs in (1, 3, 7):
        np.testing.assert_array_equal(device_timing.make_batch(images, bs), bench_timing.make_batch(images, bs))
    assert device_timing.PREPROCESSING_NOTE == bench_timing.PREPROCESSING_NOTE


@pytest.mark.parametrize("warmup,runs,min_runs,limit,warm_s", [(2, 50, 5, 0.0105, 0.0), (0, 10, 1, 100.0, 0.1),
                                                                (3, 500, 20, 0.03, 0.02)])
def test_same_stopping_rule(monkeypatch, warmup, runs, min_runs, limit, warm_s):
    """With a fake clock that advances 1 ms per reading, both harnesses time exactly the same calls."""
    def run(module, cfg):
        clock = itertools.count()
        monkeypatch.setattr(module.time, "perf_counter", lambda: next(clock) * 1e-3)
        calls = []
        times = module.time_calls(lambda: calls.append(1), cfg)
        return len(calls), times

    dev = run(device_timing, device_timing.TimingConfig(warmup=warmup, runs=runs, min_runs=min_runs,
                                                        time_limit_s=limit, warmup_s=warm_s))
    ref = run(bench_timing, bench_timing.TimingConfig(warmup=warmup, runs=runs, min_runs=min_runs,
                                                      time_limit_s=limit, warmup_s=warm_s))
    assert dev == ref
    assert min_runs <= len(dev[1]) <= runs


def test_same_measurement_of_a_runner():
    class Fake:
        fixed_batch = 2

        def run(self, x):
            return np.zeros((len(x), 3), np.float32)

    images = np.ones((5, 1, 2, 2), np.float32)
    dev = device_timing.measure(Fake, images, [1, 2], device_timing.TimingConfig(warmup=0, runs=3, min_runs=1))[1]
    ref = bench_timing.measure(Fake, images, [1, 2], bench_timing.TimingConfig(warmup=0, runs=3, min_runs=1))[1]
    assert dev.keys() == ref.keys()
    assert dev["skipped_batch_sizes"] == ref["skipped_batch_sizes"] == [1]
    assert [b["batch_size"] for b in dev["batches"]] == [b["batch_size"] for b in ref["batches"]] == [2]
    device_timing.finish_memory(dev)
    bench_timing.finish_memory(ref)
    assert dev.keys() == ref.keys() and dev["peak_rss_mb"] > 0
