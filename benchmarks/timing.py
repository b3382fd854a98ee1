"""The timing harness: first inference, warm-up, then timed runs until a count or a time limit.

What is timed: one call of the runtime on an already preprocessed float32 NCHW batch (see runtimes.py).
Preprocessing (decode, resize, normalise) is excluded for every runtime alike; the inputs are real test
images prepared once before timing. Peak memory is the process's resident-set high-water mark (VmHWM),
reset before each model is loaded where Linux allows it, so it covers loading plus every run of that model.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

PREPROCESSING_NOTE = ("excluded for every runtime: inputs are test images already decoded, resized and normalised "
                      "to float32 NCHW before timing; each timed call is one runtime inference on one batch")


#: Seconds of untimed calls before timing, whatever `warmup` says: a fresh ONNX Runtime session with 2 threads on a
#: 2-vCPU Intel Xeon (AMX) VM ran its first 30-60 ms of calls 1.2-1.8x slower (0.10 against 0.06 ms for a tiny CNN),
#: by time, not by count; ten warm-up calls left that in the p50 of small models, and a paired timing of two fresh
#: sessions read 1.4x for a 2.0x speedup. With 1 thread the effect was absent.
WARMUP_S = 0.1


def warm_up(fns: tuple[Callable[[], object], ...], calls: int, seconds: float) -> None:
    """Call each of `fns` in turn at least `calls` times and until `seconds` have passed."""
    perf = time.perf_counter
    deadline = perf() + seconds
    done = 0
    while done < calls or perf() < deadline:
        for fn in fns:
            fn()
        done += 1


class TimingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    warmup: int = Field(10, ge=0, description="untimed runs after the first inference")
    warmup_s: float = Field(WARMUP_S, ge=0, le=60, description="untimed runs go on until this long has passed")
    runs: int = Field(200, ge=1, description="timed runs per batch size (at most)")
    min_runs: int = Field(10, ge=1, description="timed runs even past the time limit")
    time_limit_s: float = Field(2.0, gt=0, description="stop timing a batch size after this long (once min_runs)")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarize(times_s: list[float], batch_size: int) -> dict[str, Any]:
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


def time_calls(fn: Callable[[], object], cfg: TimingConfig) -> list[float]:
    """Warm up (cfg.warmup calls and cfg.warmup_s seconds), then time `fn` until cfg.runs calls or
    cfg.time_limit_s (after at least cfg.min_runs)."""
    warm_up((fn,), cfg.warmup, cfg.warmup_s)
    times: list[float] = []
    perf = time.perf_counter
    deadline = perf() + cfg.time_limit_s
    while len(times) < cfg.runs:
        t0 = perf()
        fn()
        times.append(perf() - t0)
        if len(times) >= cfg.min_runs and perf() > deadline:
            break
    return times


#: Smallest relative latency difference a paired timing reports as a speedup (smaller ones are marked ~).
MIN_EFFECT = 0.03
#: Timed calls per model per round of a paired timing.
PAIR_BLOCK = 10


def time_paired(fn_a: Callable[[], object], fn_b: Callable[[], object], cfg: TimingConfig,
                block: int = PAIR_BLOCK) -> dict[str, Any]:
    """Time two calls side by side, in alternating blocks of `block` calls (the order flipping every round), so
    that load on the host hits both alike; the first call of each block is untimed (a runtime's worker threads
    may still be busy from the other model). Returns both p50s over all timed calls, their ratio p50_b / p50_a,
    and a sign test over the rounds' medians: `resolved` when b is slower than a (or faster) in clearly more rounds
    than chance gives (|z| > 2.58) and the ratio is at least MIN_EFFECT away from 1 (a 0.5% difference can be
    "significant" and is meaningless for a deployment decision)."""
    warm_up((fn_a, fn_b), cfg.warmup, cfg.warmup_s)
    ta: list[list[float]] = []
    tb: list[list[float]] = []
    perf = time.perf_counter
    deadline = perf() + 2 * cfg.time_limit_s

    def timed(fn: Callable[[], object]) -> list[float]:
        fn()
        out = []
        for _ in range(block):
            t0 = perf()
            fn()
            out.append(perf() - t0)
        return out

    while sum(map(len, ta)) < cfg.runs:
        if len(ta) % 2 == 0:
            ta.append(timed(fn_a))
            tb.append(timed(fn_b))
        else:
            tb.append(timed(fn_b))
            ta.append(timed(fn_a))
        if len(ta) >= 2 and sum(map(len, ta)) >= cfg.min_runs and perf() > deadline:
            break
    n = len(ta)
    slower = sum(statistics.median(b) > statistics.median(a) for a, b in zip(ta, tb, strict=True))
    z = (slower - n / 2) / (n / 4) ** 0.5
    p50_a = percentile([t for r in ta for t in r], 50) * 1e3
    p50_b = percentile([t for r in tb for t in r], 50) * 1e3
    return {"rounds": n, "calls_per_round": block, "p50_a_ms": p50_a, "p50_b_ms": p50_b, "ratio": p50_b / p50_a,
            "ratio_ci": ratio_ci(ta, tb, p50_b / p50_a),
            "b_slower_rounds": slower, "z": z, "resolved": abs(z) > 2.58 and abs(p50_b / p50_a - 1) >= MIN_EFFECT}


#: Bootstrap resamples and seed of a paired timing's confidence interval.
CI_RESAMPLES = 2000
CI_LEVEL = 0.95


def ratio_ci(ta: list[list[float]], tb: list[list[float]], ratio: float) -> list[float]:
    """A 95% interval around `ratio` (p50_b / p50_a over all calls): a seeded bootstrap over the rounds of the
    mean log ratio of the rounds' medians, shifted onto the ratio, so the interval and the p50s agree exactly.
    Rounds are the unit resampled, so a drift that hits both calls of a round alike cancels."""
    logs = np.log([statistics.median(b) / statistics.median(a) for a, b in zip(ta, tb, strict=True)])
    rng = np.random.default_rng(0)
    means = logs[rng.integers(0, len(logs), size=(CI_RESAMPLES, len(logs)))].mean(axis=1) - logs.mean()
    lo, hi = np.quantile(means, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2])
    return [float(ratio * np.exp(lo)), float(ratio * np.exp(hi))]


def noise_floor(aa_ci: list[float]) -> float:
    """The A/A floor from the interval of a call timed against a second session of itself: the largest ratio
    (or its inverse) that interval admits, >= 1. Two identical models differ by up to this much by chance."""
    return max(aa_ci[1], 1 / aa_ci[0], 1.0)


def resolved_against(ci: list[float], floor: float) -> bool:
    """A ratio is resolved only when its whole interval lies outside the A/A band [1/floor, floor]."""
    return ci[0] > floor or ci[1] < 1 / floor


def make_batch(images: np.ndarray, batch_size: int) -> np.ndarray:
    """`batch_size` real images (repeated when the test set is smaller)."""
    reps = -(-batch_size // max(1, len(images)))
    return np.ascontiguousarray(np.concatenate([images] * reps)[:batch_size], dtype=np.float32)


# -- memory ----------------------------------------------------------------------------------------------------

def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0). False where not possible: the peak is then the process's."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def current_rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else None


def peak_rss_mb() -> float:
    kb = _status_kb("VmHWM")
    if kb is None:  # not Linux: ru_maxrss is kB on Linux, bytes on macOS
        raw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kb = raw // 1024 if os.uname().sysname == "Darwin" else raw
    return kb / 1024


def measure(load: Callable[[], Any], images: np.ndarray, batch_sizes: list[int], cfg: TimingConfig
            ) -> tuple[Any, dict[str, Any]]:
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


def finish_memory(result: dict[str, Any]) -> None:
    """Record peak RSS after everything that ran on this model (timing and accuracy)."""
    peak = peak_rss_mb()
    result["peak_rss_mb"] = peak
    before = result.get("rss_before_mb")
    result["rss_delta_mb"] = peak - before if before is not None and result.get("peak_rss_reset") else None
