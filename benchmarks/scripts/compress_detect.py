"""A compressed YOLO specialist against its generalist on synthetic detection data: MACs, mAP50-95, host speedup.

    python benchmarks/scripts/compress_detect.py --out DIR [--group vehicles] [--epochs 40] [--spec-epochs 20]
        [--comp-epochs 40] [--comp-lr 1e-3] [--macs-ratio 0.5] [--control]

yolo11n generalist (random init, `--epochs`) -> `--group` specialist (head sliced, `--spec-epochs`) -> compressed
(Torch-Pruning to `--macs-ratio` of the MACs, Ultralytics fine-tuning `--comp-epochs` at `--comp-lr`). `--control`
adds the compute-matched control: a specialist fine-tuned for spec + comp epochs at the compression's learning rate
without pruning, and that control compressed too. Runs already complete in DIR are reused. Everything is exported
as ONNX fp32 (the export's parity check included) and benched on host-cpu (ONNX Runtime, batch 1 and 32; each
specialist timed side by side with the generalist). Prints per model: MACs and their ratio to the generalist's,
mAP50-95 on the group's validation images against the generalist's closed-set mAP50-95 on the same images, and the
batch-1 p50 and speedup over the generalist fp32 (paired ratio where timed side by side).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _complete(d: Path) -> bool:
    p = d / "run.json"
    return p.is_file() and json.loads(p.read_text()).get("status") == "complete"


def build(args) -> list[Path]:
    from toolkit.detect.compress import DetectCompressConfig, compress_detect
    from toolkit.detect.specialize import specialize_detect
    from toolkit.detect.synth import synth_detect
    from toolkit.detect.train import DetectTrainConfig, train_detect

    out = args.out
    data = out / "data" / "data.yaml"
    if not data.is_file():
        data = synth_detect(out / "data", train=args.train, val=args.val, size=args.size)
    runs = {"gen": out / "gen", "spec": out / "spec", "comp": out / "comp"}
    if not _complete(runs["gen"]):
        train_detect(DetectTrainConfig(data=str(data), model="yolo11n.yaml", epochs=args.epochs, imgsz=args.size,
                                       device="cpu"), runs["gen"])
    if not _complete(runs["spec"]):
        specialize_detect(runs["gen"], args.group, runs["spec"], epochs=args.spec_epochs, device="cpu")
    comp_cfg = DetectCompressConfig(macs_ratio=args.macs_ratio, epochs=args.comp_epochs, lr0=args.comp_lr,
                                    device="cpu")
    if not _complete(runs["comp"]):
        compress_detect(runs["spec"], runs["comp"], comp_cfg)
    if args.control:
        runs["spec-long"], runs["comp-long"] = out / "spec-long", out / "comp-long"
        if not _complete(runs["spec-long"]):
            specialize_detect(runs["gen"], args.group, runs["spec-long"], epochs=args.spec_epochs + args.comp_epochs,
                              lr0=args.comp_lr, device="cpu")
        if not _complete(runs["comp-long"]):
            compress_detect(runs["spec-long"], runs["comp-long"], comp_cfg)
    return list(runs.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--group", default="vehicles")
    p.add_argument("--train", type=int, default=300)
    p.add_argument("--val", type=int, default=100)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--spec-epochs", type=int, default=20)
    p.add_argument("--comp-epochs", type=int, default=40)
    p.add_argument("--comp-lr", type=float, default=1e-3)
    p.add_argument("--macs-ratio", type=float, default=0.5)
    p.add_argument("--control", action="store_true")
    args = p.parse_args()
    args.out = args.out.resolve()

    from benchmarks import BenchConfig, bench
    from exporters import export_runs

    runs = build(args)
    export = args.out / "export"
    if not (export / "manifest.json").is_file():
        export_runs(runs, ["onnx"], export)
    report = bench(export, args.out / "report", BenchConfig(devices=["host-cpu"]))
    rows = [r for r in report["rows"] if r["device"] == "host-cpu" and r["format"] == "onnx" and r["batch_size"] == 1]
    gen = next(r for r in rows if r["role"] == "generalist")
    print(f"host: {report.get('host', {}).get('cpu') or 'see report.json'}; ONNX Runtime fp32, batch 1, measured on "
          "host (noisy when the host is shared)")
    head = f"{'model':<10} {'MACs':>8} {'ratio':>6} {'mAP50-95':>9} {'gen closed':>10} {'p50 ms':>7} {'speedup':>8}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        paired = (r.get("speedup_paired") or {}).get("speedup")
        speed = paired or (gen["latency_ms"]["p50"] / r["latency_ms"]["p50"])
        closed = r.get("generalist_accuracy_closed")
        print(f"{r['model']:<10} {r['macs'] / 1e6:>7.2f}M {r['macs'] / gen['macs']:>6.3f} {r['accuracy']:>9.4f} "
              f"{'–' if closed is None else f'{closed:.4f}':>10} {r['latency_ms']['p50']:>7.3f} "
              f"{speed:>7.2f}x{'' if paired else '*'}")
    print("(mAP50-95: one class per box on the group's validation images, the generalist's row on all classes; "
          "speedup: paired side-by-side ratio, * the two rows' p50s)")


if __name__ == "__main__":
    main()
