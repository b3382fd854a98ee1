"""`--target-speedup S`: the MACs ratio at which the pruned model runs S times faster than its parent, measured.

Latency does not fall in proportion to MACs (memory traffic, per-layer overheads, kernels that prefer some widths),
so the ratio is searched: prune a copy of the parent (with the same importance and rounding as the compression
itself), time it side by side with the parent (the injected `measure`, see benchmarks/speedup.py), prune further
while it is too slow. Fine-tuning changes weights, not shapes, so the pruned-untrained copy runs as fast as the
fine-tuned result will; the compression then prunes to the ratio found, and its result is timed again at the end.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import read_json
from ..runs import RUN_FILE, Run

log = logging.getLogger(__name__)

MAX_TRIES = 6  # candidates timed at most
MIN_CUT, MAX_CUT = 0.5, 0.9  # each new candidate keeps this share (at least, at most) of the last one's MACs


def _grad_batches(run: Run, cfg) -> list:
    import torch
    from torch.utils.data import DataLoader

    gen = torch.Generator().manual_seed(cfg.seed * 1000)
    loader = DataLoader(run.data().dataset("train"), batch_size=cfg.batch_size, shuffle=True, generator=gen)
    return [b for _, b in zip(range(cfg.importance_batches), loader, strict=False)]


def search_speedup(run: Run, out: Path, cfg, resume: bool, measure) -> dict[str, Any]:
    """{"macs_ratio", "measured", "tried"} for cfg.target_speedup; a UserError saying what was reached otherwise.
    An interrupted run resumed keeps the ratio its first call found (timings are not repeatable)."""
    from .prune import count, prune_to

    if resume and (out / RUN_FILE).is_file():
        prev = (read_json(out / RUN_FILE, "run file").get("compression") or {}).get("speedup_search")
        if prev:
            return prev
    goal = float(cfg.target_speedup)
    pre = run.info["preprocess"]
    chw = (int(pre["channels"]), *(int(s) for s in pre["input_size"]))
    arch = run.info["arch"]["name"]
    parent = run.model("best").cpu().eval()
    model = copy.deepcopy(parent)
    base = count(parent, chw)[0]
    grads = _grad_batches(run, cfg) if cfg.importance == "taylor" else None
    ratio, tried = min(0.95, 1.0 / goal), []
    while True:
        reached = prune_to(model, chw, target="macs", ratio=ratio, base=base, importance=cfg.importance,
                           round_to=cfg.round_to, arch=arch, num_classes=len(run.classes), grad_batches=grads)
        m = measure(parent, model.eval(), chw)
        tried.append({"macs_ratio": reached["reached"], "speedup": m["speedup"], "p50_ms": m["p50_pruned_ms"]})
        log.info("--target-speedup %.2f: %.3f of the MACs measured %.2fx", goal, reached["reached"], m["speedup"])
        if m["speedup"] >= goal:
            return {"macs_ratio": reached["reached"], "measured": m, "tried": tried}
        stuck = reached["reached"] > ratio * 1.1 + 0.02  # no group could shrink further
        if stuck or len(tried) >= MAX_TRIES:
            best = max(tried, key=lambda t: t["speedup"])
            why = "no group can shrink further" if stuck else f"{len(tried)} candidates timed"
            raise UserError(f"--target-speedup {goal:g} not reached on {m['device']}: the fastest pruned {arch} "
                            f"measured {best['speedup']:.2f}x at {best['macs_ratio']:.3f} of the MACs ({why}; "
                            f"{m['measurement']}); ask for at most {best['speedup']:.2f}x or use --macs-ratio")
        ratio = reached["reached"] * min(MAX_CUT, max(MIN_CUT, m["speedup"] / goal))
