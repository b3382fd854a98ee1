"""fp32 against every int8 recipe of exporters/int8_recipes.py on this host, side by side, with top-1 agreement.

    python benchmarks/scripts/int8_recipes.py [--models resnet18,mobilenet_v2,mobilenet_v3_small] [--threads 2]
                                              [--rounds 15] [--block 10]

Random-weight torchvision models (resnet18 at 64 px, the MobileNets at 96 px), batch 1, ONNX Runtime CPU.
Each model is exported once to fp32 ONNX and quantized once per distinct recipe (recipes with the same settings
share a column), calibrated on 32 seeded synthetic images. All sessions are timed in one process, in rounds that
visit them in a shuffled order, `block` calls each (the first untimed), so load on a shared machine hits all alike;
the p50 is over every timed call. Agreement is top-1 against fp32 on 256 other synthetic images.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"resnet18": 64, "mobilenet_v2": 96, "mobilenet_v3_small": 96}


def columns() -> dict[tuple, list[str]]:
    from exporters.int8_recipes import RECIPES

    cols: dict[tuple, list[str]] = {}
    for name, r in RECIPES.items():
        cols.setdefault(r.settings(), []).append(name)
    return cols


def label(settings: tuple) -> str:
    act, rr, _, _ = settings
    return f"{act}S8 {'7' if rr else '8'}-bit"


def build(model_name: str, size: int, tmp: Path) -> tuple[Path, dict[tuple, Path]]:
    import torch
    import torchvision

    from exporters.int8_recipes import RECIPES
    from exporters.onnx_export import INPUT_NAME, export_onnx
    from exporters.quantize import CalibrationSet, quantize_int8

    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)(weights=None, num_classes=10).eval()
    fp32 = tmp / f"{model_name}.onnx"
    export_onnx(model, fp32, (3, size, size), 20, True, {"model": model_name})
    calib = np.random.default_rng(1).standard_normal((32, 3, size, size)).astype(np.float32)
    q = {}
    for settings, names in columns().items():
        out = tmp / f"{model_name}.{names[0]}.int8.onnx"
        quantize_int8(fp32, out, CalibrationSet(calib, {"method": "minmax"}), INPUT_NAME, recipe=RECIPES[names[0]])
        q[settings] = out
    return fp32, q


def session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def time_side_by_side(sessions: dict[str, object], x: np.ndarray, rounds: int, block: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for k, s in sessions.items():  # warm-up
        for _ in range(5):
            s.run(None, feeds[k])
    for _ in range(rounds):
        for k in rng.permutation(list(sessions)):
            s, feed = sessions[k], feeds[k]
            s.run(None, feed)
            for _ in range(block):
                t0 = time.perf_counter()
                s.run(None, feed)
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def agreement(ref, other, images: np.ndarray) -> float:
    name = ref.get_inputs()[0].name
    a = np.concatenate([ref.run(None, {name: images[i:i + 1]})[0] for i in range(len(images))]).argmax(1)
    b = np.concatenate([other.run(None, {other.get_inputs()[0].name: images[i:i + 1]})[0]
                        for i in range(len(images))]).argmax(1)
    return float((a == b).mean())


def main() -> None:
    from exporters.int8_recipes import host_isa

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(SIZES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--block", type=int, default=10)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    host = host_isa()
    cols = columns()
    default = next(s for s, names in cols.items() if host in names)
    print(f"host ISA: {host} (default recipe {label(default)}); {args.threads} threads, batch 1, "
          f"{args.rounds} rounds x {args.block} calls")
    for s, names in cols.items():
        print(f"  {label(s):12s} = {', '.join(names)}")
    head = "| model | px | fp32 ms | " + " | ".join(f"{label(s)} ms (agree)" for s in cols) + " | default / fp32 |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            size = SIZES[name]
            fp32, q = build(name, size, Path(tmp))
            sessions = {"fp32": session(fp32, args.threads)} | {label(s): session(p, args.threads)
                                                                  for s, p in q.items()}
            x = np.random.default_rng(2).standard_normal((1, 3, size, size)).astype(np.float32)
            p50 = time_side_by_side(sessions, x, args.rounds, args.block)
            test = np.random.default_rng(3).standard_normal((256, 3, size, size)).astype(np.float32)
            cells = [f"{p50[label(s)]:.3f} ({agreement(sessions['fp32'], sessions[label(s)], test):.3f})"
                     for s in cols]
            print(f"| {name} | {size} | {p50['fp32']:.3f} | " + " | ".join(cells)
                  + f" | {p50[label(default)] / p50['fp32']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
