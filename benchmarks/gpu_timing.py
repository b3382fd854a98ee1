"""GPU timing the way trtexec reports it: CUDA events around each phase of one inference, on one stream.

Per timed inference: host-to-device copy of the input (H2D), GPU compute (the enqueue: TensorRT's
execute_async_v3 or the PyTorch forward), device-to-host copy of the output (D2H), each timed by CUDA events
recorded on the stream, and the end-to-end latency timed on the host after the stream is synchronised. Each gets
p50/p90/p99, mean, std and the coefficient of variation (std / mean); a CV above CV_WARN is reported as a warning
(trtexec prints a stability warning for unstable GPU compute time too; edgespec's threshold is its own choice).

Unsynchronised Python timing around an asynchronous GPU call measures the launch, not the inference: the most
common wrong Jetson figure. Everything here synchronises before reading a clock.

`cuda_graph=True` captures the compute phase once into a CUDA graph and replays it (trtexec --useCudaGraph):
it removes per-launch CPU overhead, which on small models is most of the latency.

The CUDA calls go through `cuda` (torch.cuda by default) so the bookkeeping is testable without a GPU; every
figure this produces on real hardware is measured there, none on the development host (no GPU).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Coefficient of variation above which a phase's timing is flagged as unstable.
CV_WARN = 0.01
PHASES = ("h2d_ms", "compute_ms", "d2h_ms", "end_to_end_ms")


def phase_stats(ms: list[float]) -> dict[str, float]:
    """p50/p90/p99 (numpy linear percentiles, as benchmarks.timing), mean, population std, CV, min, max."""
    a = np.asarray(ms, dtype=np.float64)
    mean = float(a.mean())
    std = float(statistics.pstdev(ms)) if len(ms) > 1 else 0.0
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": mean, "std": std,
            "cv": std / mean if mean > 0 else 0.0, "min": float(a.min()), "max": float(a.max())}


def time_phases(h2d: Callable[[], Any], compute: Callable[[], Any], d2h: Callable[[], Any], stream: Any,
                runs: int = 200, warmup: int = 10, cuda: Any = None, cuda_graph: bool = False,
                time_limit_s: float | None = None, clock: Callable[[], float] = time.perf_counter
                ) -> dict[str, Any]:
    """Time `runs` inferences phase by phase on `stream` (after `warmup` untimed ones).

    h2d/compute/d2h enqueue their work on `stream` and return without waiting. With `cuda_graph`, `compute` is
    captured once into a CUDA graph (after the warm-up) and replayed instead. `clock`: the host clock (seconds)."""
    if cuda is None:
        import torch

        cuda = torch.cuda
    if runs < 1 or warmup < 0:
        raise ValueError("GPU timing needs runs >= 1 and warmup >= 0")
    for _ in range(warmup):
        h2d()
        compute()
        d2h()
    stream.synchronize()
    launch = compute
    if cuda_graph:
        graph = cuda.CUDAGraph()
        with cuda.graph(graph, stream=stream):
            compute()
        launch = graph.replay
    samples: dict[str, list[float]] = {p: [] for p in PHASES}
    perf = clock
    deadline = perf() + time_limit_s if time_limit_s else None
    for _ in range(runs):
        events = [cuda.Event(enable_timing=True) for _ in range(4)]
        t0 = perf()
        events[0].record(stream)
        h2d()
        events[1].record(stream)
        launch()
        events[2].record(stream)
        d2h()
        events[3].record(stream)
        events[3].synchronize()
        samples["end_to_end_ms"].append((perf() - t0) * 1e3)
        samples["h2d_ms"].append(float(events[0].elapsed_time(events[1])))
        samples["compute_ms"].append(float(events[1].elapsed_time(events[2])))
        samples["d2h_ms"].append(float(events[2].elapsed_time(events[3])))
        if deadline is not None and perf() > deadline and len(samples["end_to_end_ms"]) >= 10:
            break
    stats = {p: phase_stats(v) for p, v in samples.items()}
    warnings = [f"{p[:-3]} time is unstable: coefficient of variation {s['cv']:.1%} > {CV_WARN:.0%} over "
                f"{len(samples[p])} runs (clocks not locked, other work on the GPU, or thermal throttling)"
                for p, s in stats.items() if s["cv"] > CV_WARN]
    for w in warnings:
        log.warning(w)
    return {**stats, "runs": len(samples["end_to_end_ms"]), "warmup": warmup, "cuda_graph": cuda_graph,
            "warnings": warnings, "method": "CUDA events on one stream per phase; end-to-end on the host after "
            "stream synchronisation", "measurement": "measured on device (a CUDA GPU)"}
