"""p50 latency of ExecuTorch (XNNPACK) fp32 and int8 against ONNX Runtime fp32 and int8, side by side, on this host.

    python benchmarks/scripts/executorch_vs_ort.py [--models smallcnn,resnet18,mobilenet_v3_small] [--image-size 64]
        [--threads 2] [--rounds 30] [--calls 10]

Per model: the four files are built by edgespec's own exporters (exporters.onnx_export, exporters.quantize with
this host's int8 recipe, exporters.executorch), then timed in one process through the bench's runners
(benchmarks.runtimes: OrtRunner on the CPU execution provider, ExecuTorchRunner through executorch.runtime), with
the same threads, at batch 1, in interleaved rounds (each round: `--calls` timed calls of every file in turn), so a
load change on a shared host hits all four alike. p50 is over every timed call. Weights are random (seeded) and the
int8 files are calibrated on seeded random images: latency does not depend on the weights' values, accuracy is not
measured here (the export's parity check covers it for real runs). Preprocessing is not timed.

On a shared host, 2 threads measure the other jobs more than the model: resnet18 fp32 through ONNX Runtime at 64 px
had p50 10.4 ms with 2 threads and 3.0 ms with 1 (minimum 2.9 ms both) on the 2-core AMD EPYC of 2026-12-02 under a
load average of ~6, since every call waits for the busier core; compare runtimes at the same threads, and prefer
`--threads 1` there.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

COLUMNS = ("ort-fp32", "ort-int8", "et-fp32", "et-int8")


def build(model_name: str, size: int, work: Path) -> tuple[dict[str, Path], dict[str, float]]:
    import torch

    from exporters.executorch import export_fp32, export_int8
    from exporters.int8_recipes import choose
    from exporters.onnx_export import INPUT_NAME, export_onnx
    from exporters.quantize import CalibrationSet, hash_images, quantize_int8
    from toolkit.models import create_model

    torch.manual_seed(0)
    model = create_model(model_name, 10, 3, size, False).eval()
    chw = (3, size, size)
    calib = np.random.default_rng(0).standard_normal((64, *chw)).astype(np.float32)
    paths = {c: work / f"{model_name}.{c}" for c in COLUMNS}
    paths = {c: p.with_suffix(p.suffix + (".onnx" if c.startswith("ort") else ".pte")) for c, p in paths.items()}
    share = {}
    export_onnx(model, paths["ort-fp32"], chw)
    recipe, _ = choose(None)
    facts = {"method": "minmax", "sha256": hash_images(calib), "images": len(calib)}
    quantize_int8(paths["ort-fp32"], paths["ort-int8"], CalibrationSet(calib, facts), INPUT_NAME, recipe=recipe)
    share["et-fp32"] = export_fp32(model, paths["et-fp32"], chw)["delegation"]["delegated_share"]
    share["et-int8"] = export_int8(model, paths["et-int8"], chw, calib)["delegation"]["delegated_share"]
    return paths, share


def time_side_by_side(paths: dict[str, Path], size: int, threads: int, rounds: int, calls: int) -> dict[str, float]:
    from benchmarks.runtimes import ExecuTorchRunner, OrtRunner

    runners = {c: (OrtRunner(p, threads, ["CPUExecutionProvider"]) if c.startswith("ort")
                   else ExecuTorchRunner(p, threads)) for c, p in paths.items()}
    x = np.random.default_rng(1).standard_normal((1, 3, size, size)).astype(np.float32)
    for r in runners.values():  # first inference and warm-up, untimed
        for _ in range(10):
            r.run(x)
    times: dict[str, list[float]] = {c: [] for c in runners}
    for _ in range(rounds):
        for c, r in runners.items():
            for _ in range(calls):
                t0 = time.perf_counter()
                r.run(x)
                times[c].append((time.perf_counter() - t0) * 1e3)
    return {c: float(np.percentile(v, 50)) for c, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="smallcnn,resnet18,mobilenet_v3_small")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--calls", type=int, default=10)
    args = p.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    from exporters.int8_recipes import host_isa
    from toolkit.devices import host_description

    host = host_description()
    print(f"host: {host['cpu']}, {host['cores']} cores, ISA {host_isa()}; measured on host, batch 1, "
          f"{args.image_size} px, {args.threads} threads, {args.rounds} interleaved rounds x "
          f"{args.calls} calls per file")
    print(f"{'model':<20} " + " ".join(f"{c + ' p50 ms':>16}" for c in COLUMNS) + "   XNNPACK share fp32/int8")
    with tempfile.TemporaryDirectory(prefix="edgespec-et-vs-ort-") as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            paths, share = build(name, args.image_size, Path(tmp))
            p50 = time_side_by_side(paths, args.image_size, args.threads, args.rounds, args.calls)
            print(f"{name:<20} " + " ".join(f"{p50[c]:>16.3f}" for c in COLUMNS)
                  + f"   {share['et-fp32']:.3f}/{share['et-int8']:.3f}", flush=True)


if __name__ == "__main__":
    main()
