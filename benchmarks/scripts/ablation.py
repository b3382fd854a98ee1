"""The specialization ablation of methods.md 1, on CPU: does a specialist beat its generalist, and why?

For each data set and seed: train a generalist (--model, --gen-epochs), partition its classes by confusion
(semantic groups), then on every group's test images compare
  generalist open-set / closed-set; the control: the generalist fine-tuned on all classes with the specialists'
  recipe and scored closed-set on the same groups (is a gain specialization or just more training? its
  epochs default to the specialists', so it takes as many steps as all specialists together; --control-epochs
  changes that); extract with and without BN conversion, new-head, head-first, and extract on random groups of
  the same sizes (control for semantic groups).
Specialists keep their starting model unless an epoch validates better (keep-start, the default); the
"no keep-start" rows show fine-tuning alone. Accuracies are pooled over a partition's groups (every test
image counted once). Prints mean ± std over seeds, optimizer steps per fine-tuned model, the share that kept
their start, and the generalist's clean train/test top-1 (over- or underfitting); writes ablation.json.

    python benchmarks/scripts/ablation.py --out runs/ablation    # smallcnn; synthetic (noisy) and digits, ~4 min
    python benchmarks/scripts/ablation.py --seeds 0 --data digits --out /tmp/abl   # one quick pass

What it shows (3 seeds, 2-core shared CPU). smallcnn on noisy synthetic overfits (clean train ~98%, test ~81%):
its errors are noise, there is no capacity to free, and short fine-tuning on a group's few images cannot beat
the closed-set generalist (keep-start: +0.00; fine-tuning alone -1.5). A capacity-limited generalist is where
specialists gain, as in the papers: a 1/8-width smallcnn on 72 classes (8 groups of 9), ~12 min:

    python benchmarks/scripts/ablation.py --model smallcnn-w4 --gen-epochs 30 --lr 3e-3 \
        --synthetic synthetic:groups=8,classes=9,per_class=100,noise=1.0 --out runs/ablation-w4

Generalist clean train 86%, test 85% (underfits); extract + BN +6.7 pts over closed-set, the all-class control
+4.7 with 8.7x the steps per model: part of the gain is just more training. Trained to convergence, ~13 min:

    python benchmarks/scripts/ablation.py --model smallcnn-w4 --gen-epochs 80 --lr 3e-3 --data synthetic \
        --synthetic synthetic:groups=8,classes=9,per_class=100,noise=1.0 --out runs/ablation-w4 --methods \
        "generalist +ft (control)" "extract + BN conversion" "extract, no BN conversion" "extract + BN, random groups"

the generalist reaches train 98%, test 97%; the control gains +0.0, extract + BN +1.1 (random groups +0.2, no BN
conversion +0.8): that gain is specialization, not extra steps. At the gentle default --lr 3e-4 the
capacity-limited specialist gains only +1.2 (30 epochs; without BN conversion -0.5).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

# The default synthetic data is solved to 100% by the generalist, which leaves a specialist nothing to show;
# more noise and fewer images make within-group marks hard to see (generalist ~80% top-1, 3 seeds).
DATA = {"synthetic": "synthetic:noise=2.0,per_class=100", "digits": "digits"}
GROUPS = {"synthetic": 4, "digits": 3}  # digits: no known groups; 3 confusion clusters
METHODS = [  # name, groups ("semantic" | "random" | "all"), SpecializeConfig overrides
    ("generalist +ft (control)", "all", {"init": "extract"}),
    ("generalist +ft, no keep-start (control)", "all", {"init": "extract", "keep_start": False}),
    ("extract + BN conversion", "semantic", {"init": "extract", "bn_convert": True}),
    ("extract + BN, no keep-start", "semantic", {"init": "extract", "bn_convert": True, "keep_start": False}),
    ("extract, no BN conversion", "semantic", {"init": "extract", "bn_convert": False}),
    ("new-head", "semantic", {"init": "new-head"}),
    ("head-first", "semantic", {"init": "head-first"}),
    ("extract + BN, random groups", "random", {"init": "extract", "bn_convert": True}),
]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def random_groups(semantic: dict[str, list[str]], classes: list[str], seed: int) -> dict[str, list[str]]:
    """Random groups with exactly the semantic groups' sizes."""
    perm = list(np.random.default_rng(1000 + seed).permutation(len(classes)))
    out, start = {}, 0
    for i, members in enumerate(semantic.values()):
        out[f"random-{i + 1}"] = [classes[j] for j in sorted(perm[start:start + len(members)])]
        start += len(members)
    return out


def pooled(rows: list[tuple[int, float]]) -> float:
    n = sum(k for k, _ in rows)
    return sum(k * a for k, a in rows) / n if n else float("nan")


def _canonical(spec: str) -> str:
    kind, _, opts = spec.partition(":")  # synthetic's options in any order name the same data
    return kind + (":" + ",".join(sorted(opts.split(","))) if opts else "")


def generalist_config(name: str, seed: int, model: str, gen_epochs: int | None):
    from toolkit.train import TrainConfig

    return TrainConfig(data=DATA[name], seed=seed, device="cpu", model=model,
                       **({"epochs": gen_epochs} if gen_epochs else {}))


def clean_accuracy(run, split: str) -> float:
    """Top-1 over all classes on `split`, eval mode, no augmentation: train vs test says under- or overfitting."""
    import torch

    from toolkit.evaluate import eval_loader, predict

    logits, labels = predict(run.model(), eval_loader(run.data(), split), torch.device("cpu"))
    return float((logits.argmax(1) == labels).mean())


def training_record(run_dirs: list[Path], cfg) -> tuple[float, float]:
    """Mean optimizer steps per model, and the fraction of models whose best.pt is still the starting model."""
    from toolkit.checkpoint import load_checkpoint
    from toolkit.runs import Run

    steps, kept = [], []
    for d in run_dirs:
        n = len(Run.open(d).data().dataset("train"))
        steps.append(cfg.epochs * (n // cfg.batch_size if n > cfg.batch_size else 1))  # fit drops the last batch
        kept.append(load_checkpoint(d / "checkpoints" / "best.pt").get("epoch") == 0)
    return float(np.mean(steps)), float(np.mean(kept))


def one_seed(name: str, seed: int, out: Path, overrides: dict, model: str = "smallcnn",
             gen_epochs: int | None = None, control_epochs: int | None = None) -> dict:
    import torch

    from toolkit.evaluate import eval_loader, predict
    from toolkit.runs import Run
    from toolkit.specialize import SpecializeConfig, partition, specialize_group
    from toolkit.specialize.compare import group_accuracies
    from toolkit.train import train

    gen_cfg = generalist_config(name, seed, model, gen_epochs)
    base = out / name / f"{model}-e{gen_cfg.epochs}" / f"seed{seed}"
    t0 = time.perf_counter()
    if not (base / "generalist" / "run.json").is_file():
        train(gen_cfg, base / "generalist")
    gen = Run.open(base / "generalist")
    if _canonical(gen.info["data"]) != _canonical(DATA[name]):
        raise SystemExit(f"{gen.path} was trained on {gen.info['data']!r}, not {DATA[name]!r}; pick another --out")
    logits, labels = predict(gen.model(), eval_loader(gen.data(), "test"), torch.device("cpu"))
    k = len(gen.info.get("groups") or {}) or GROUPS[name]  # synthetic data knows how many groups it has
    semantic = partition(gen, "confusion", n_groups=k, seed=seed)
    truth = {frozenset(v) for v in (gen.info.get("groups") or {}).values()}
    partitions = {"semantic": semantic, "random": random_groups(semantic, gen.classes, seed)}
    result: dict = {"seed": seed, "generalist_s": round(time.perf_counter() - t0, 1), "groups": partitions,
                    "generalist_fit": {"train": clean_accuracy(gen, "train"),
                                       "test": float((logits.argmax(1) == labels).mean())},
                    "semantic_is_true_grouping": {frozenset(v) for v in semantic.values()} == truth if truth else None,
                    "accuracy": {}}
    for kind, groups in partitions.items():
        rows = [group_accuracies(logits, labels, [gen.classes.index(c) for c in g]) for g in groups.values()]
        result["accuracy"][f"generalist open ({kind})"] = pooled([(n, o) for n, o, _ in rows])
        result["accuracy"][f"generalist closed ({kind})"] = pooled([(n, c) for n, _, c in rows])
    schedule = base / "_".join(f"{k}{v}" for k, v in sorted(SpecializeConfig(**overrides).model_dump().items())
                               if k in ("epochs", "lr"))  # generalists are shared between schedules
    result["steps"], result["kept_start"] = {}, {}
    for label, kind, cfg_over in METHODS:
        t1 = time.perf_counter()
        control = {"epochs": control_epochs} if kind == "all" and control_epochs else {}
        cfg = SpecializeConfig(device="cpu", seed=seed, **{**overrides, **cfg_over, **control})
        slug = schedule / "".join(c if c.isalnum() or c == "-" else "_" for c in label.replace("+", "plus"))
        slug = slug.with_name(f"{slug.name}_e{cfg.epochs}") if kind == "all" else slug
        if kind == "all":  # the control: all classes, same recipe; scored closed-set on the semantic groups
            run_dirs = {"all": slug}
            if not (slug / "run.json").is_file():
                specialize_group(gen, "all", gen.classes, slug, cfg)
            ft = Run.open(slug)
            ft_logits, ft_labels = predict(ft.model(), eval_loader(ft.data(), "test"), torch.device("cpu"))
            rows = [group_accuracies(ft_logits, ft_labels, [gen.classes.index(c) for c in g])
                    for g in semantic.values()]
            result["accuracy"][label] = pooled([(n, c) for n, _, c in rows])
        else:
            rows, run_dirs = [], {g: slug / g for g in partitions[kind]}
            for group, members in partitions[kind].items():
                run_dir = run_dirs[group]
                res = specialize_group(gen, group, members, run_dir, cfg) if not (run_dir / "run.json").is_file() \
                    else {"test": json.loads((run_dir / "eval-test.json").read_text())}
                rows.append((res["test"]["images"], res["test"]["top1"]))
            result["accuracy"][label] = pooled(rows)
        result["steps"][label], result["kept_start"][label] = training_record(list(run_dirs.values()), cfg)
        _log(f"  {name} seed {seed}: {label:<40} {result['accuracy'][label]:.4f} ({time.perf_counter() - t1:.0f}s)")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _stats(vals: np.ndarray) -> dict:
    return {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
            "min": float(vals.min()), "max": float(vals.max()), "values": vals.tolist()}


def summarize(results: dict[str, list[dict]]) -> tuple[list[str], dict]:
    names = [m[0] for m in METHODS]
    rows = ["generalist open (semantic)", "generalist closed (semantic)"] + [n for n in names if "random" not in n] + \
        ["generalist closed (random)"] + [n for n in names if "random" in n]
    summary: dict = {}
    for name, seeds in results.items():
        summary[name] = {"_generalist": {split: _stats(np.array([s["generalist_fit"][split] for s in seeds]) * 100)
                                         for split in ("train", "test")},
                         "_true_groups": sum(bool(s["semantic_is_true_grouping"]) for s in seeds)
                         if any(s["semantic_is_true_grouping"] is not None for s in seeds) else None}
        for row in rows:
            vals = np.array([s["accuracy"][row] for s in seeds]) * 100
            ref_key = "generalist closed (random)" if "random" in row else "generalist closed (semantic)"
            gains = vals - np.array([s["accuracy"][ref_key] for s in seeds]) * 100
            summary[name][row] = {**_stats(vals), "gain_mean": float(gains.mean()),
                                  "gain_std": float(gains.std(ddof=1)) if len(gains) > 1 else 0.0}
            if row in names:
                summary[name][row]["steps_per_model"] = float(np.mean([s["steps"][row] for s in seeds]))
                summary[name][row]["kept_start"] = float(np.mean([s["kept_start"][row] for s in seeds]))
    return rows, summary


def table(rows: list[str], summary: dict, n_seeds: int, model: str) -> str:
    names = list(summary)
    head = "| method | " + " | ".join(f"{n} top-1 % | gain vs closed (pts) | steps/model, kept start"
                                     for n in names) + " |"
    lines = [f"{model}: accuracy on the groups' test images, mean ± std over {n_seeds} seeds (gain: vs the "
             "generalist's closed-set accuracy on the same groups; steps/model: optimizer steps each fine-tuned "
             "model took; kept start: share of them whose best.pt is still the starting model).", "", head,
             "| --- |" + " ---: | ---: | ---: |" * len(names)]
    for row in rows:
        cells = []
        for n in names:
            s = summary[n][row]
            cells.append(f"{s['mean']:.2f} ± {s['std']:.2f}")
            cells.append("" if row.startswith("generalist ") and "+ft" not in row
                         else f"{s['gain_mean']:+.2f} ± {s['gain_std']:.2f}")
            cells.append(f"{s['steps_per_model']:.0f}, {s['kept_start']:.2f}" if "steps_per_model" in s else "")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines.append("")
    for n in names:
        g = summary[n]["_generalist"]
        lines.append(f"{n}: generalist top-1 over all classes (eval mode, no augmentation): train "
                     f"{g['train']['mean']:.2f} ± {g['train']['std']:.2f}, test {g['test']['mean']:.2f} ± "
                     f"{g['test']['std']:.2f}" + ("" if summary[n]["_true_groups"] is None else
                                                   f"; confusion groups = the data's true groups in "
                                                   f"{summary[n]['_true_groups']}/{n_seeds} seeds"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"), help="where runs and ablation.json go")
    parser.add_argument("--data", nargs="+", default=list(DATA), choices=list(DATA))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="specialist epochs (default: SpecializeConfig's)")
    parser.add_argument("--lr", type=float, default=None, help="specialist lr (default: SpecializeConfig's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--synthetic", default=DATA["synthetic"], help="the synthetic data spec to use")
    parser.add_argument("--model", default="smallcnn", help="generalist architecture (`edgespec models`), e.g. "
                        "smallcnn-w4 for a capacity-limited one")
    parser.add_argument("--gen-epochs", type=int, default=None, help="generalist epochs (default: TrainConfig's)")
    parser.add_argument("--control-epochs", type=int, default=None,
                        help="epochs of the fine-tuned-generalist control (default: the specialists'; the groups "
                        "partition the data, so the control then takes as many steps as all specialists together)")
    parser.add_argument("--methods", nargs="+", default=[m[0] for m in METHODS], choices=[m[0] for m in METHODS],
                        metavar="METHOD", help="a subset of the methods (default: all)")
    args = parser.parse_args(argv)
    from toolkit.models import REGISTRY

    if args.model not in REGISTRY:
        parser.error(f"unknown --model {args.model!r}; choose from {', '.join(sorted(REGISTRY))}")

    import torch

    from toolkit.io import write_json, write_text
    from toolkit.specialize import SpecializeConfig
    from toolkit.specialize.specialize import FRESH_HEAD_LR_MULT

    torch.set_num_threads(args.threads)
    DATA["synthetic"] = args.synthetic
    METHODS[:] = [m for m in METHODS if m[0] in args.methods]
    logging.basicConfig(level=logging.WARNING)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr)) if v is not None}
    cfg = SpecializeConfig(**overrides)
    t0 = time.perf_counter()
    results: dict[str, list[dict]] = {}
    for name in args.data:
        results[name] = []
        for seed in args.seeds:
            _log(f"{name} seed {seed} ...")
            results[name].append(one_seed(name, seed, args.out, overrides, args.model, args.gen_epochs,
                                            args.control_epochs))
    rows, summary = summarize(results)
    text = table(rows, summary, len(args.seeds), args.model)
    elapsed = time.perf_counter() - t0
    write_json(args.out / "ablation.json", {
        "schema": "edgespec.ablation/1", "data": {n: DATA[n] for n in args.data}, "seeds": args.seeds,
        "model": args.model, "control_epochs": args.control_epochs or cfg.epochs,
        "generalist_epochs": generalist_config(args.data[0], 0, args.model, args.gen_epochs).epochs,
        "specialist_config": {k: getattr(cfg, k) for k in ("epochs", "lr", "optimizer", "head_lr_mult", "head_epochs",
                                                           "warmup_epochs", "batch_size", "keep_start")},
        "fresh_head_lr_mult": FRESH_HEAD_LR_MULT, "torch_threads": args.threads, "seconds": round(elapsed, 1),
        "summary": summary, "runs": results})
    write_text(args.out / "ablation.md", text + "\n")
    print(text)
    print(f"\n{elapsed / 60:.1f} min on CPU ({args.threads} thread); runs and ablation.json in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
