"""Compressed specialists against the generalist: accuracy, MACs and side-by-side host latency, per group.

    python benchmarks/scripts/compress.py --data digits --model resnet18 --image-size 32 --out /tmp/study
        [--epochs 6] [--spec-epochs 3] [--comp-epochs 12] [--comp-lr 2e-3] [--ratios 0.25,0.33,0.5] [--groups 3]
        [--limit 1] [--seeds 0,1,2]

Trains a generalist (skipped when OUT/gen is complete), partitions it by confusion, specializes the first
--limit groups, compresses each specialist at every ratio with and without distillation, exports everything as
onnx fp32 and prints per group: the generalist's closed-set accuracy on the group's test images, each model's
accuracy (PyTorch, same images), its MACs and parameter ratios against the generalist, and its p50 at batch 1
timed side by side with the generalist fp32 (benchmarks.timing.time_paired, onnxruntime CPU, --threads).
Each seed (OUT/seed<N>: its own generalist, partition, specialists) prints its table; with several seeds a
summary follows: per model kind, the range over seeds of the accuracy difference and of the speedup, and in how
many seeds the target was met.
Target (issue 13): a compressed specialist >= 2x faster with at most 1 pt below the closed-set accuracy and
>= 3x fewer MACs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def build(args, out: Path, seed: int) -> tuple[Path, list[Path], dict[str, list[Path]]]:
    from toolkit.compress import CompressConfig, compress_run
    from toolkit.runs import Run
    from toolkit.specialize import SpecializeConfig, partition, specialize
    from toolkit.train import TrainConfig, train

    gen = out / "gen"
    if not (gen / "run.json").is_file() or not Run.open(gen).complete:
        train(TrainConfig(data=args.data, model=args.model, image_size=args.image_size, epochs=args.epochs,
                          seed=seed, device="cpu"), gen, resume=(gen / "run.json").is_file())
    run = Run.open(gen)
    groups = dict(list(partition(run, "confusion", args.groups, seed=seed).items())[:args.limit])
    specialize(run, groups, out / "spec", SpecializeConfig(epochs=args.spec_epochs, seed=seed, device="cpu"),
               resume=(out / "spec").is_dir())
    specs = [out / "spec" / g for g in groups]
    comps: dict[str, list[Path]] = {}
    for g, spec in zip(groups, specs, strict=True):
        for ratio in args.ratios:
            for kd in (True, False):
                target = out / "comp" / f"{g}-m{round(ratio * 100)}-{'kd' if kd else 'ce'}"
                cfg = CompressConfig(macs_ratio=ratio, distill=kd, epochs=args.comp_epochs, lr=args.comp_lr,
                                     seed=seed, device="cpu")
                compress_run(spec, target, cfg, resume=(target / "run.json").is_file())
                comps.setdefault(g, []).append(target)
    return gen, specs, comps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--spec-epochs", type=int, default=3)
    p.add_argument("--comp-epochs", type=int, default=12)
    p.add_argument("--comp-lr", type=float, default=2e-3, help="recovery fine-tuning peak learning rate")
    p.add_argument("--ratios", type=lambda s: [float(v) for v in s.split(",")], default=[0.25, 0.33, 0.5])
    p.add_argument("--groups", type=int, default=3)
    p.add_argument("--limit", type=int, default=1, help="study only the first N groups")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=400)
    p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

    rows: list[dict] = []
    for seed in args.seeds:
        rows += study(args, Path(args.out) / f"seed{seed}", seed)
    if len(args.seeds) > 1:
        summary(rows, args)


def study(args, out: Path, seed: int) -> list[dict]:
    from benchmarks.accuracy import load_test_set
    from benchmarks.runtimes import OrtRunner
    from benchmarks.timing import TimingConfig, make_batch, noise_floor, resolved_against, time_paired
    from exporters import export_runs
    from toolkit.compress.prune import count
    from toolkit.runs import Run
    from toolkit.specialize.compare import specialists_vs_generalist

    gen, specs, comps = build(args, out, seed)
    everything = [*specs, *[c for cs in comps.values() for c in cs]]
    export_dir = out / "export"
    if not (export_dir / "manifest.json").is_file():
        export_runs([gen, *everything], ["onnx"], export_dir)
    onnx = {Path(e["run"]).name: export_dir / e["path"] for e in
            json.loads((export_dir / "manifest.json").read_text())["artifacts"] if e["format"] == "onnx"}
    cmp = specialists_vs_generalist(gen, everything)
    g_run = Run.open(gen)
    pre = g_run.info["preprocess"]
    chw = (pre["channels"], *pre["input_size"])
    g_macs, g_params = count(g_run.model(), chw)
    timing = TimingConfig(warmup=20, runs=args.runs, time_limit_s=3.0)
    gen_runner = OrtRunner(onnx[gen.name], args.threads, ["CPUExecutionProvider"])
    # the A/A pair: a second session of the generalist timed against it, as every specialist is; a speedup counts
    # (no ~) only when its interval excludes this floor, as in bench's reports
    x0 = make_batch(load_test_set(specs[0], 64).x, 1)
    aa_runner = OrtRunner(onnx[gen.name], args.threads, ["CPUExecutionProvider"])
    aa = time_paired(lambda r=aa_runner, x=x0: r.run(x), lambda x=x0: gen_runner.run(x), timing)
    floor = noise_floor(aa["ratio_ci"])
    del aa_runner
    print(f"# seed {seed}: {args.data}, {args.model} at {args.image_size} px, generalist {g_macs / 1e6:.2f}M MACs, "
          f"{g_params / 1e6:.2f}M params, all-class test top-1 {_top1(gen):.4f}; "
          f"onnxruntime CPU {args.threads} threads, batch 1, side by side; A/A (generalist against a second session "
          f"of itself) {aa['ratio']:.2f}x [{aa['ratio_ci'][0]:.2f}-{aa['ratio_ci'][1]:.2f}], floor {floor:.2f}x; "
          "~: inside the floor")
    print(f"{'group':<10} {'model':<22} {'acc':>7} {'gen closed':>10} {'Δ pt':>6} {'MACs x':>7} {'params x':>8} "
          f"{'p50 ms':>8} {'gen p50':>8} {'speedup':>8} {'interval':>12}")
    rows = []
    for group in cmp["groups"]:
        for s in group["specialists"]:
            run = Run.open(s["run"])
            macs, params = count(run.model(), chw)
            x = make_batch(load_test_set(s["run"], 64).x, 1)
            runner = OrtRunner(onnx[run.path.name], args.threads, ["CPUExecutionProvider"])
            res = time_paired(lambda r=runner, x=x: r.run(x), lambda x=x: gen_runner.run(x), timing)
            resolved = resolved_against(res["ratio_ci"], floor)
            closed = group["generalist_closed"]
            delta = (s["accuracy"] - closed) * 100
            print(f"{group['group']:<10} {run.path.name:<22} {s['accuracy']:>7.4f} {closed:>10.4f} "
                  f"{delta:>+6.1f} {macs / g_macs:>7.3f} "
                  f"{params / g_params:>8.3f} {res['p50_a_ms']:>8.4f} {res['p50_b_ms']:>8.4f} {res['ratio']:>7.2f}x"
                  + ("" if resolved else "~") + f" [{res['ratio_ci'][0]:.2f}-{res['ratio_ci'][1]:.2f}]")
            kind = "specialist" if run.path.parent.name == "spec" else "-".join(run.path.name.rsplit("-", 2)[1:])
            rows.append({"seed": seed, "kind": kind, "delta_pt": delta, "macs_ratio": macs / g_macs,
                         "speedup": res["ratio"], "resolved": resolved, "aa": aa["ratio"]})
    print(flush=True)
    return rows


def _top1(run: Path) -> float:
    path = run / "eval-test.json"
    return json.loads(path.read_text())["top1"] if path.is_file() else float("nan")


def summary(rows: list[dict], args) -> None:
    print(f"# summary over seeds {','.join(map(str, args.seeds))}: {args.data}, {args.model} at {args.image_size} px "
          f"(target: >= 2x faster, >= -1 pt, <= 1/3 of the MACs)")
    aa = [r["aa"] for r in rows]
    print(f"A/A (generalist against itself) over seeds: {min(aa):.2f}..{max(aa):.2f}x")
    print(f"{'model':<12} {'Δ pt (min..max)':>16} {'MACs x':>7} {'speedup (min..max)':>19} {'target met':>10}")
    for kind in dict.fromkeys(r["kind"] for r in rows):
        rs = [r for r in rows if r["kind"] == kind]
        d = [r["delta_pt"] for r in rs]
        sp = [r["speedup"] for r in rs]
        met = sum(r["delta_pt"] >= -1 and r["speedup"] >= 2 and r["resolved"] and r["macs_ratio"] <= 1 / 3 + 1e-9
                  for r in rs)
        print(f"{kind:<12} {min(d):>+7.1f}..{max(d):>+6.1f} {sum(r['macs_ratio'] for r in rs) / len(rs):>7.3f} "
              f"{min(sp):>8.2f}..{max(sp):>6.2f}x {met:>6}/{len(rs)}")


if __name__ == "__main__":
    main()
