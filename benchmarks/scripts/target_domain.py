"""Specializing for a deployment site known only from unlabelled images (methods.md 2-3), on CPU.

For each data set and seed: train a smallcnn generalist, write a shifted target site with `write_target`
(synthetic: two of four texture groups with added noise; digits: five digits with thicker strokes),
propose the group from the site's unlabelled images, then score on the site's labelled test images (every
target image counts; a prediction outside the true class is an error):
  generalist open-set (argmax over all classes) and closed-set (argmax over the proposed group), and open-set
  with AdaBN on the site's unlabelled images (no specialization at all);
  specialists on the proposed group: uniform sampling + group BN (today's specialize), importance sampling only,
  target BN only (DAFT's conversion on the site's images), both, and AdaBN (--bn-target adapt: the saved model's
  statistics re-estimated on the site's images) with uniform or importance sampling.
Also how the proposed group matches the site's true classes (precision, recall). Prints mean ± std over seeds
and writes target_domain.json.

    python benchmarks/scripts/target_domain.py --out /tmp/target-study            # 3 seeds, both data sets
    python benchmarks/scripts/target_domain.py --seeds 0 --data digits --out /tmp/t  # one quick pass
    python benchmarks/scripts/target_domain.py --data synthetic --shift dark --out /tmp/target-study  # a harmful
                                                  # shift instead of the site's own (toolkit.data.target.SHIFTS)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

SITES = {  # data spec, generalist epochs, target classes (None: the source groups named), shift
    "synthetic": ("synthetic:groups=4,classes=3,per_class=100,noise=1.0", 12, ["hstripes", "rings"], "noise"),
    "digits": ("digits", 15, ["0", "1", "2", "3", "4"], "thick"),
}
VARIANTS = {
    "uniform + group BN": ("uniform", "group"),
    "importance only": ("importance", "group"),
    "target BN only": ("uniform", "target"),
    "importance + target BN": ("importance", "target"),
    "AdaBN only": ("uniform", "adapt"),
    "importance + AdaBN": ("importance", "adapt"),
}


def _target_test(site: Path, run) -> tuple:
    """Labelled target test images as the model's input, with generalist class ids."""
    import torch

    from toolkit.specialize.target import load_target_images

    xs, ys = [], []
    for d in sorted((site / "test").iterdir()):
        x, _, n = load_target_images(d, run)
        xs.append(x)
        ys += [run.classes.index(d.name)] * n
    return torch.cat(xs), np.asarray(ys)


def _predict_ids(run, x, allowed: list[int] | None = None, model=None) -> np.ndarray:
    from toolkit.specialize.target import penultimate

    _, logits = penultimate(model if model is not None else run.model("best"), x)
    ids = np.asarray(run.class_ids)
    if allowed is not None:
        mask = np.full(logits.shape[1], -np.inf)
        mask[[run.class_ids.index(c) for c in allowed]] = 0
        logits = logits + mask
    return ids[logits.argmax(1)]


def one(name: str, seed: int, out: Path, spec_epochs: int, clusters: int, shift: str | None = None) -> dict:
    from toolkit.data.target import write_target
    from toolkit.runs import Run
    from toolkit.specialize import SpecializeConfig, specialize
    from toolkit.specialize.target import penultimate, plan_target, propose_group, site_model
    from toolkit.train import TrainConfig, train

    spec, gen_epochs, target, site_shift = SITES[name]
    shift = shift or site_shift
    gen_dir = out / f"{name}-s{seed}" / "generalist"  # one generalist per data set and seed, whatever the shift
    root = gen_dir.parent / shift
    if not (gen_dir / "checkpoints" / "best.pt").is_file():
        train(TrainConfig(data=spec, epochs=gen_epochs, seed=seed, device="cpu"), gen_dir,
              resume=(gen_dir / "run.json").is_file())
    gen = Run.open(gen_dir)
    groups = gen.info.get("groups") or {}
    truth = [c for g in target for c in groups[g]] if name == "synthetic" else target
    site = root / "site"
    if not (site / "target.json").is_file():
        write_target(gen_dir, site, truth, shift, seed=seed)
    x, y = _target_test(site, gen)

    base = SpecializeConfig(target_images=str(site / "unlabeled"), epochs=spec_epochs, seed=seed, device="cpu",
                            clusters=clusters)
    plan = plan_target(gen, base.target_images, base)
    adapted = site_model(gen, plan.images, "adapt")  # the generalist with AdaBN on the site's unlabelled images
    _, logits = penultimate(site_model(gen, plan.images, base.bn_target), plan.images)
    group, _ = propose_group(logits, gen.classes, base.min_share)  # as `specialize --target-images` proposes
    gids = [gen.classes.index(c) for c in group]
    row = {"data": name, "seed": seed, "shift": shift, "target_images": plan.record["count"], "test_images": len(y),
           "truth": truth, "proposed": group,
           "precision": len(set(group) & set(truth)) / len(group), "recall": len(set(group) & set(truth)) / len(truth),
           "generalist open-set": float((_predict_ids(gen, x) == y).mean()),
           "generalist closed-set": float((_predict_ids(gen, x, gids) == y).mean()),
           "generalist + AdaBN open-set": float((_predict_ids(gen, x, model=adapted) == y).mean())}
    for label, (sampling, bn_target) in VARIANTS.items():
        cfg = base.model_copy(update={"sampling": sampling, "bn_target": bn_target})
        sub = root / label.replace(" ", "").replace("+", "_")
        if not (sub / "run.json").is_file() or not Run.open(sub).complete:
            specialize(gen, {"target": group}, sub, cfg, single=True, resume=(sub / "run.json").is_file())
        row[label] = float((_predict_ids(Run.open(sub), x) == y).mean())
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--data", nargs="+", default=list(SITES), choices=list(SITES))
    ap.add_argument("--epochs", type=int, default=5, help="specialist epochs")
    ap.add_argument("--clusters", type=int, default=8)
    ap.add_argument("--shift", default=None, help="one shift for every data set instead of each site's own "
                    "(toolkit.data.target.SHIFTS)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows, t0 = [], time.perf_counter()
    for name in args.data:
        for seed in args.seeds:
            rows.append(one(name, seed, args.out, args.epochs, args.clusters, args.shift))
            print(f"{name} seed {seed} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.shift}" if args.shift else ""
    (args.out / f"target_domain{suffix}.json").write_text(json.dumps(rows, indent=2) + "\n")
    cols = ["generalist open-set", "generalist closed-set", "generalist + AdaBN open-set", *VARIANTS]
    print(f"target-domain top-1, mean ± std over seeds {args.seeds} (smallcnn, {args.epochs} specialist epochs, "
          f"K={args.clusters})\n")
    print("| data (shift) | proposed group: precision / recall | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    for name in args.data:
        rs = [r for r in rows if r["data"] == name]

        def cell(key, rs=rs):
            v = np.asarray([r[key] for r in rs], dtype=float)
            return f"{100 * v.mean():.1f} ± {100 * v.std():.1f}"

        print(f"| {name} ({rs[0]['shift']}, {rs[0]['target_images']} unlabelled, {rs[0]['test_images']} test) | "
              f"{cell('precision')} / {cell('recall')} | " + " | ".join(cell(c) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
