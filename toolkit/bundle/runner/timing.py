"""COPY of benchmarks/timing.py for the on-device runner: standard library and numpy only.

The runner cannot import edgespec (the device has no edgespec, no torch, no pydantic), so the timing
methodology is copied here, line for line where possible: first inference (load plus one run), warm-up, then
timed runs until a count or a time limit; p50/p90/p99 (numpy linear percentiles), mean, population std,
min, max; throughput = batch size / p50; peak memory = VmHWM reset before each model is loaded.
tests/unit/test_bundle_timing.py checks that both produce the same statistics on the same sample list:
change both together.

What is timed: one call of the runtime on an already preprocessed float32 NCHW batch. Preprocessing (decode,
resize, normalise) is excluded for every runtime alike; the inputs are real test images prepared once before
timing (the bundle ships them preprocessed).
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from dataclasses import dataclass

import numpy as np

PREPROCESSING_NOTE = ("excluded for every runtime: inputs are test images already decoded, resized and normalised "
                      "to float32 NCHW before timing; each timed call is one runtime inference on one batch")


#: as benchmarks.timing.WARMUP_S (why there)
WARMUP_S = 0.1


def warm_up(fns, calls, seconds):
    """Call each of `fns` in turn at least `calls` times and until `seconds` have passed."""
    perf = time.perf_counter
    deadline = perf() + seconds
    done = 0
    while done < calls or perf() < deadline:
        for fn in fns:
            fn()
        done += 1


@dataclass
class TimingConfig:
    """Same fields and defaults as benchmarks.timing.TimingConfig (a pydantic model there)."""

    warmup: int = 10
    runs: int = 200
    min_runs: int = 10
    time_limit_s: float = 2.0
    warmup_s: float = WARMUP_S

    def __post_init__(self) -> None:
        if (self.warmup < 0 or self.runs < 1 or self.min_runs < 1 or self.time_limit_s <= 0
                or not 0 <= self.warmup_s <= 60):
            raise ValueError("timing needs warmup >= 0, runs >= 1, min_runs >= 1, time_limit_s > 0 and "
                             "0 <= warmup_s <= 60")


def percentile(values, q):
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarize(times_s, batch_size):
    """Latency statistics in milliseconds and throughput in images per second."""
    ms = [t * 1e3 for t in times_s]
    mean = statistics.fmean(ms)
    return {
        "batch_size": batch_size,
        "runs": len(ms),
        "latency_ms": {"p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99),
                       "mean": mean, "std": statistics.pstdev(ms) if len(ms) > 1 else 0.0,
                       "min": min(ms), "max": max(ms)},
        "throughput_ips": batch_size * 1e3 / percentile(ms, 50),
    }


def time_calls(fn, cfg):
    """Warm up (cfg.warmup calls and cfg.warmup_s seconds), then time `fn` until cfg.runs calls or
    cfg.time_limit_s (after at least cfg.min_runs)."""
    warm_up((fn,), cfg.warmup, cfg.warmup_s)
    times = []
    perf = time.perf_counter
    deadline = perf() + cfg.time_limit_s
    while len(times) < cfg.runs:
        t0 = perf()
        fn()
        times.append(perf() - t0)
        if len(times) >= cfg.min_runs and perf() > deadline:
            break
    return times


def make_batch(images, batch_size):
    """`batch_size` real images (repeated when the test set is smaller)."""
    reps = -(-batch_size // max(1, len(images)))
    return np.ascontiguousarray(np.concatenate([images] * reps)[:batch_size], dtype=np.float32)


def _status_kb(field):
    try:
        with open("/proc/self/status") as fh:
            for line in fh.read().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0). False where not possible: the peak is then the process's."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def current_rss_mb():
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else None


def peak_rss_mb():
    kb = _status_kb("VmHWM")
    if kb is None:  # not Linux: ru_maxrss is kB on Linux, bytes on macOS
        raw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kb = raw // 1024 if os.uname().sysname == "Darwin" else raw
    return kb / 1024


def measure(load, images, batch_sizes, cfg):
    """Load a runner and time it. Returns (runner, result) so the caller can reuse the session for accuracy."""
    reset_ok = reset_peak_rss()
    rss_before = current_rss_mb()
    t0 = time.perf_counter()
    runner = load()
    t_load = time.perf_counter()
    first_bs = batch_sizes[0] if runner.fixed_batch is None else runner.fixed_batch
    runner.run(make_batch(images, first_bs))
    t_first = time.perf_counter()
    per_batch, skipped = [], []
    for bs in batch_sizes:
        if runner.fixed_batch is not None and bs != runner.fixed_batch:
            skipped.append(bs)
            continue
        x = make_batch(images, bs)
        per_batch.append(summarize(time_calls(lambda x=x: runner.run(x), cfg), bs))
    result = {
        "load_ms": (t_load - t0) * 1e3,
        "first_inference_ms": (t_first - t0) * 1e3,
        "batches": per_batch,
        "skipped_batch_sizes": skipped,
        "rss_before_mb": rss_before,
        "peak_rss_reset": reset_ok,
    }
    return runner, result


def finish_memory(result):
    """Record peak RSS after everything that ran on this model (timing and accuracy)."""
    peak = peak_rss_mb()
    result["peak_rss_mb"] = peak
    before = result.get("rss_before_mb")
    result["rss_delta_mb"] = peak - before if before is not None and result.get("peak_rss_reset") else None
