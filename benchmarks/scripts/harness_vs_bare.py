"""Does the harness add overhead? Its p50 against a bare ONNX Runtime loop on the same model, threads and input.

    python benchmarks/scripts/harness_vs_bare.py [EXPORT_DIR_OR_ONNX] [--threads N] [--batch B] [--runs R] [--rounds K]

The two are run side by side in one process: K rounds, each timing the harness (benchmarks.timing.measure
with an OrtRunner) and then a bare `session.run` loop, alternating which goes first, so drift in the machine's
load hits both alike. Each uses its own session with the same options. Prints both p50s and their ratio; the
target is a ratio within 5% of 1. The default model is the generalist of `runs/export` (`edgespec pipeline`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def resolve_model(path: Path) -> Path:
    if path.is_file():
        return path
    from exporters import load_manifest

    manifest = load_manifest(path)
    entry = next((e for e in manifest["artifacts"] if e["format"] == "onnx" and e["role"] == "generalist"),
                 next((e for e in manifest["artifacts"] if e["format"] == "onnx"), None))
    if entry is None:
        sys.exit(f"error: {path} has no onnx artifact; export one with `edgespec export --formats onnx`")
    return path / entry["path"]


def bare_session(model: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])


def bare_loop(sess, x: np.ndarray, warmup: int, runs: int) -> list[float]:
    """What anyone would write by hand: warm up, then time session.run with perf_counter."""
    name = sess.get_inputs()[0].name
    for _ in range(warmup):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return times


def harness_times(model: Path, threads: int, x: np.ndarray, warmup: int, runs: int) -> list[float]:
    from benchmarks.runtimes import OrtRunner
    from benchmarks.timing import TimingConfig, time_calls

    runner = OrtRunner(model, threads, ["CPUExecutionProvider"])
    cfg = TimingConfig(warmup=warmup, runs=runs, min_runs=runs, time_limit_s=3600)
    return time_calls(lambda: runner.run(x), cfg)


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="runs/export", type=Path, help="export directory or .onnx file")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=2000, help="timed runs per round and method")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=50)
    args = ap.parse_args(argv)
    if not args.model.exists():
        sys.exit(f"error: {args.model} not found; run `edgespec pipeline` first or pass an .onnx file")
    model = resolve_model(args.model)
    sess = bare_session(model, args.threads)
    shape = [args.batch if not isinstance(d, int) or d <= 0 else d for d in sess.get_inputs()[0].shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    harness, bare = [], []
    harness_times(model, args.threads, x, args.warmup, 10)  # first session in the process: imports, allocator
    for k in range(args.rounds):
        order = ("harness", "bare") if k % 2 == 0 else ("bare", "harness")
        for which in order:
            if which == "harness":
                harness += harness_times(model, args.threads, x, args.warmup, args.runs)
            else:
                bare += bare_loop(sess, x, args.warmup, args.runs)
    h50, b50 = statistics.median(harness) * 1e3, statistics.median(bare) * 1e3
    ratio = h50 / b50
    print(f"model {model} ({', '.join(map(str, shape))}), {args.threads} threads, batch {args.batch}, "
          f"{args.rounds} rounds x {args.runs} runs each, alternating")
    print(f"harness p50 {h50:.5f} ms   bare onnxruntime loop p50 {b50:.5f} ms   ratio {ratio:.3f} "
          f"({'within' if abs(ratio - 1) <= 0.05 else 'OUTSIDE'} the 5% target)")
    return ratio


if __name__ == "__main__":
    main()
