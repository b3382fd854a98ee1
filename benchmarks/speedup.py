"""How much faster one PyTorch model runs than another on a device profile served here: both exported to ONNX
fp32 and timed side by side (timing.time_paired) in the profile's ONNX Runtime, batch 1.

`edgespec compress --target-speedup` injects `paired_speedup(profile)` into the compression loop (toolkit core
does not time models: benchmarks/ sits above it).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import UserError

from .timing import TimingConfig, time_paired

log = logging.getLogger(__name__)

#: Timing of each candidate: fewer runs than bench (the search measures several candidates).
SEARCH_TIMING = TimingConfig(warmup=10, runs=200, min_runs=40, time_limit_s=1.5)


def paired_speedup(profile_name: str, timing: TimingConfig = SEARCH_TIMING) -> Callable[..., dict[str, Any]]:
    """`measure(parent, pruned, chw) -> {"speedup", "p50_parent_ms", "p50_pruned_ms", ...}` on `profile_name`."""
    from toolkit.devices import load_profile

    from .bench import serve_status

    profile = load_profile(profile_name)
    where, why = serve_status(profile)
    if where is None or profile.runtime != "onnxruntime":
        reason = why or f"its runtime is {profile.runtime}"
        raise UserError(f"--target-speedup measures on this host in ONNX Runtime: profile {profile.name} cannot be "
                        f"measured here ({reason}); use host-cpu")

    def measure(parent: Any, pruned: Any, chw: tuple[int, int, int]) -> dict[str, Any]:
        import copy

        from exporters.onnx_export import export_onnx

        from .runtimes import OrtRunner

        with tempfile.TemporaryDirectory(prefix="edgespec-speedup-") as tmp:
            paths = []
            for name, model in (("parent", parent), ("pruned", pruned)):
                path = Path(tmp) / f"{name}.onnx"
                export_onnx(copy.deepcopy(model).cpu().eval(), path, chw)
                paths.append(path)
            a, b = (OrtRunner(p, profile.thread_count, profile.execution_providers) for p in paths)
            x = np.random.default_rng(0).standard_normal((1, *chw)).astype(np.float32)
            t = time_paired(lambda: a.run(x), lambda: b.run(x), timing)
        speedup = t["p50_a_ms"] / t["p50_b_ms"]
        log.info("measured on %s (ONNX Runtime fp32, batch 1, side by side): %.3f ms -> %.3f ms, %.2fx", profile.name,
                 t["p50_a_ms"], t["p50_b_ms"], speedup)
        return {"speedup": speedup, "p50_parent_ms": t["p50_a_ms"], "p50_pruned_ms": t["p50_b_ms"],
                "latency_ratio_ci": t["ratio_ci"], "rounds": t["rounds"], "device": profile.name,
                "measurement": "measured on host, ONNX Runtime fp32, batch 1, side by side (timing.time_paired)"}

    return measure
