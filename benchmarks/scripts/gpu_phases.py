"""trtexec-style GPU timing of an export directory: H2D, GPU compute and D2H by CUDA events, plus synchronised
end-to-end latency, each with p50/p90/p99 and coefficient of variation (warned when high), for every TensorRT
engine in the manifest (its engine key checked first: engines built elsewhere are refused, rebuild them) and for
each run's PyTorch checkpoint on the GPU (the host-gpu path).

    python benchmarks/scripts/gpu_phases.py runs/export [--batch 8] [--runs 200] [--cuda-graph] [--json OUT]

`--cuda-graph` captures the compute phase into a CUDA graph and replays it (trtexec --useCudaGraph). Needs a CUDA
GPU (TensorRT 10.x/11.x for the engines); every figure it prints is measured on this host's GPU, never estimated.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("export_dir", type=Path)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--cuda-graph", action="store_true", help="replay the compute phase from a CUDA graph")
    p.add_argument("--json", type=Path, help="write the figures here too")
    args = p.parse_args(argv)
    import numpy as np
    import torch

    from benchmarks.runtimes import TorchRunner, TrtRunner, tensorrt_available
    from exporters import load_manifest
    from toolkit.errors import EdgespecError

    if not torch.cuda.is_available():
        print("error: no CUDA GPU is visible; run this on a GPU machine", file=sys.stderr)
        return 2
    try:
        artifacts = load_manifest(args.export_dir)["artifacts"]
    except EdgespecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trt_ok, why = tensorrt_available()
    results, rows = [], []
    for run in sorted({e["run"] for e in artifacts}):
        entry = next(e for e in artifacts if e["run"] == run)
        x = np.random.default_rng(0).standard_normal((args.batch, *entry["input_shape"][1:])).astype(np.float32)
        targets = [("pytorch (host-gpu)", lambda run=run: TorchRunner(run, 1, "cuda"))]
        for e in artifacts:
            if e["run"] == run and e["format"].startswith("tensorrt"):
                if not trt_ok:
                    rows.append(f"{e['name']}: skipped ({why})")
                    continue
                targets.append((e["name"], lambda e=e: TrtRunner(args.export_dir / e["path"], e.get("engine_key"))))
        for name, make in targets:
            try:
                res = make().phases(x, args.runs, args.warmup, args.cuda_graph)
            except EdgespecError as exc:
                rows.append(f"{name}: refused: {exc}")
                continue
            results.append({"name": name, "run": run, "batch": args.batch, **res})
            rows.append(f"{name}: " + ", ".join(f"{k[:-3]} p50 {res[k]['p50']:.3f} / p99 {res[k]['p99']:.3f} ms "
                                                 f"(CV {res[k]['cv']:.1%})" for k in
                                                 ("h2d_ms", "compute_ms", "d2h_ms", "end_to_end_ms")))
    print(f"GPU: {torch.cuda.get_device_name()}; batch {args.batch}; cuda graph {args.cuda_graph}; measured on "
          "this host's GPU")
    print("\n".join(rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
