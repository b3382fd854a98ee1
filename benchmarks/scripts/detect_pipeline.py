"""Detection pipeline on synthetic data, on the CPU: generalist -> two group specialists -> export -> bench.

    python benchmarks/scripts/detect_pipeline.py [--out DIR] [--epochs 40] [--specialist-epochs 20] [--check]
        [--control]

Export and bench are the generic ones (`edgespec export`, `edgespec bench`: exporters.export_runs,
benchmarks.bench), so the rows land in the same reports as classification. Prints, per group and format, mAP50-95
and mAP50 of the specialist against the generalist restricted to the group's classes (closed set) and the whole
generalist (open set), and the time of every stage. Target: the whole pipeline in under 10 minutes on 2 CPU cores.
The reports (report.json/.md/.html, junit.xml) go to DIR/report. `--check` recomputes the ONNX rows' mAP with
Ultralytics' own validator (outside the timed pipeline).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="working directory (default: a new temporary one)")
    ap.add_argument("--epochs", type=int, default=40, help="generalist epochs")
    ap.add_argument("--specialist-epochs", type=int, default=20)
    ap.add_argument("--groups", default="vehicles,signs")
    ap.add_argument("--train", type=int, default=300, help="training images")
    ap.add_argument("--val", type=int, default=100, help="validation images")
    ap.add_argument("--budget-s", type=float, default=600.0, help="exit 1 when the pipeline takes longer")
    ap.add_argument("--formats", default="onnx,onnx-fp16,ort")
    ap.add_argument("--devices", default="host-cpu,jetson-orin-nano")
    ap.add_argument("--check", action="store_true", help="cross-check the bench's ONNX mAP with Ultralytics' validator")
    ap.add_argument("--control", action="store_true",
                    help="also fine-tune the generalist on all classes with the specialists' recipe and epochs "
                         "(compute-matched control), restricted to each group like the closed-set baseline")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from benchmarks import BenchConfig, bench
    from exporters import export_runs
    from toolkit.detect.specialize import specialize_detect
    from toolkit.detect.synth import synth_detect
    from toolkit.detect.train import DetectTrainConfig, train_detect
    from toolkit.io import write_json

    out = (args.out or Path(tempfile.mkdtemp(prefix="edgespec-detect-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    groups = [g for g in args.groups.split(",") if g]
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    def stage(name: str, fn, *a, **k):
        t0 = time.perf_counter()
        result = fn(*a, **k)
        times[name] = time.perf_counter() - t0
        print(f"[{time.perf_counter() - t_all:6.1f} s] {name}: {times[name]:.1f} s", flush=True)
        return result

    data = stage("synth", synth_detect, out / "data", train=args.train, val=args.val, overwrite=True)
    gen = stage("generalist", train_detect, DetectTrainConfig(data=str(data), model="yolo11n.yaml",
                                                              epochs=args.epochs, device="cpu"), out / "generalist")
    specs = []
    for g in groups:
        stage(f"specialize {g}", specialize_detect, out / "generalist", g, out / g, epochs=args.specialist_epochs,
              device="cpu")
        specs.append(out / g)
    stage("export", export_runs, [out / "generalist", *specs], args.formats, out / "export")
    report = stage("bench", bench, out / "export", out / "report",
                   BenchConfig(devices=[d for d in args.devices.split(",") if d]))
    total = time.perf_counter() - t_all
    control = stage("control", control_maps, out, groups, args.specialist_epochs) if args.control else {}
    check = stage("check", validator_check, out, report) if args.check else []

    print(f"\ngeneralist: yolo11n, {len(gen['classes'])} classes, {args.epochs} epochs, val mAP50-95 "
          f"{gen['metrics']['val']['map50_95']:.4f} (all classes)")
    head = (f"{'group':<10} {'device':<17} {'format':<14} {'specialist':>20} {'generalist closed':>20} "
            f"{'generalist open':>20} {'p50 ms':>8} {'speedup':>7}")
    print(head + "\n" + "-" * len(head))
    summary = []
    for r in report["rows"]:
        if r["role"] != "specialist" or r["accuracy"] is None:
            continue
        print(f"{r['group']:<10} {r['device']:<17} {r['format']:<14} {_pair(r['accuracy'], r['map50']):>20} "
              f"{_pair(r['generalist_accuracy_closed'], r['generalist_map50_closed']):>20} "
              f"{_pair(r['generalist_accuracy_open'], r['generalist_map50_open']):>20} "
              f"{_num((r['latency_ms'] or {}).get('p50'), 3):>8} {_num(r['speedup_vs_generalist'], 2):>7}")
        summary.append({k: r[k] for k in ("group", "device", "format", "measurement", "accuracy", "map50",
                                          "generalist_accuracy_closed", "generalist_map50_closed",
                                          "generalist_accuracy_open", "generalist_map50_open", "latency_ms",
                                          "speedup_vs_generalist", "size_bytes")})
    print("(mAP50-95 / mAP50 on the group's validation images; estimate rows carry the host's figures as a proxy)")
    for c in check:
        print(f"check {c['model']:<12} {c['format']:<10} bench {c['bench']:.4f}, Ultralytics' validator "
              f"{c['validator']:.4f} (mAP50-95)")
    for g, m in control.items():
        print(f"control {g:<10} generalist +{args.specialist_epochs} epochs on all classes, closed set: "
              f"{m['map50_95']:.4f} / {m['map50']:.4f}")
    print(f"\ntotal {total:.1f} s (budget {args.budget_s:.0f} s); reports in {out / 'report'}")
    write_json(out / "detect_pipeline.json", {"times_s": times, "total_s": total, "rows": summary,
                                              "control": control, "check": check})
    return 0 if total <= args.budget_s else 1


def _pair(a: float | None, b: float | None) -> str:
    return f"{_num(a, 4)} / {_num(b, 4)}"


def _num(v: float | None, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def validator_check(out: Path, report: dict) -> list[dict]:
    """The bench's host mAP50-95 of each ONNX artifact next to Ultralytics' validator on the same file and images
    (one class per box): both should agree to rounding; they differ only in how the images are letterboxed."""
    from exporters.manifest import load_manifest
    from toolkit.detect.evaluate import val_map
    from toolkit.io import read_json

    result = []
    for a in load_manifest(out / "export")["artifacts"]:
        if a["format"] != "onnx":
            continue
        row = next(r for r in report["rows"] if r["model"] == a["model"] and r["format"] == "onnx"
                   and r["measurement"] == "measured on host")
        info = read_json(Path(a["run"]) / "run.json")
        m = val_map(out / "export" / a["path"], Path(info["data"]), int(info["arch"]["input_size"][0]),
                    out / "check", a["model"], batch=1, multilabel=False)
        result.append({"model": a["model"], "format": "onnx", "bench": row["accuracy"], "validator": m["map50_95"],
                       "bench_map50": row["map50"], "validator_map50": m["map50"]})
    return result


def control_maps(out: Path, groups: list[str], epochs: int) -> dict[str, dict[str, float]]:
    """The generalist fine-tuned on all its classes with the specialists' recipe (a 'group' of every class), then
    restricted to each group: does the specialist gain from specializing, or only from the extra epochs?"""
    from toolkit.detect.evaluate import val_map
    from toolkit.detect.offline import load_weights
    from toolkit.detect.specialize import save_ultralytics, slice_detect, specialize_detect
    from toolkit.io import read_json, write_text

    gen = read_json(out / "generalist" / "run.json")
    write_text(out / "all.yaml", "all: [" + ", ".join(gen["classes"]) + "]\n")
    specialize_detect(out / "generalist", "all", out / "control", groups_file=out / "all.yaml", epochs=epochs,
                      device="cpu")
    result = {}
    for g in groups:
        info = read_json(out / g / "run.json")
        model = slice_detect(load_weights(out / "control" / "weights" / "best.pt"), info["class_ids"], info["classes"])
        pt = save_ultralytics(model, out / "control" / f"closed-{g}.pt", {})
        size = int(info["arch"]["input_size"][0])
        result[g] = val_map(pt, out / g / "data" / "data.yaml", size, out / "control", f"closed-{g}")
    return result


if __name__ == "__main__":
    sys.exit(main())
